"""Serving MUSE with NVIDIA Triton Inference Server (docs/serving.md).

  triton_repo  `export_triton_repo`: a model repository (ONNX Runtime / TensorRT / Python backends) for a
               production tritonserver
  server       `MuseTriton`: the engine bound into PyTriton's bundled tritonserver (`muse-tvr serve`)
  stub_env     the Python environment PyTriton's Python-backend stub runs in (see its docstring)
  client       numpy-only helpers that build requests for the models both of them serve
"""
