"""muse-tvr: an inference engine for MUSE, the multi-scale Mamba model for text-video retrieval.

Subpackages: `engine` (model, weights, video, text, retrieval), `kernels` (each fast kernel beside its
plain reference), `export` (ONNX, ONNX Runtime, TensorRT). Heavy or optional backends import lazily.
"""
__version__ = "0.1.0"
