"""What the audit, training and export reports share: metrics, figures, HTML pieces, CSV cells.

Below data, train and export, above core. Nothing here imports torch or scikit-learn; matplotlib
is imported inside :mod:`~skyclass.reporting.figures` only, when a figure is drawn.
"""
