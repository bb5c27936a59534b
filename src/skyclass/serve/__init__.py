"""Serving: torch-free preprocessing, ONNX Runtime predictor, ASGI app, Lambda handler."""
