"""Training: LR range test, progressive unfreezing with OneCycle, reports."""
