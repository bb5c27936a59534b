"""The peer: what users build instead of skyclass (PyTorch in a hand-written Lambda handler)."""
