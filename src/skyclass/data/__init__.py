"""Dataset audit, EDA, splits and the training dataset."""
