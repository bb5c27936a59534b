"""Torch-free core shared by serving, training and export: preprocessing, bundle, predictor."""
