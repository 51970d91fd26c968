"""Export: ONNX, ONNX Runtime and TensorRT."""
