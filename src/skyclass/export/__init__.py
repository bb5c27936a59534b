"""Export a trained run to a model folder: ONNX fp32 and int8, parity, model card."""
