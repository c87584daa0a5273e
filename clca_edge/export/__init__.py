"""Export: ONNX (opset 17, static shapes) with graph checks and ONNX Runtime parity."""
