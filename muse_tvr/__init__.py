"""muse-tvr: an inference engine for MUSE, the multi-scale Mamba model for text-video retrieval.

    import muse_tvr
    model = muse_tvr.load_model(None, config=muse_tvr.PRESETS["tiny"])   # or a checkpoint path
    ids = muse_tvr.ClipTokenizer()(["a dog on a beach"])
    scores = model.similarity(model.encode_text(ids), model.encode_video(frames))

Subpackages: `kernels` (each op's implementations beside its plain reference, and the op contracts),
`engine` (the model, weights, video, text, retrieval), `export` (ONNX, ONNX Runtime, TensorRT), `commands`
(the CLI), `serve` (Triton). Layers import downwards only: kernels <- engine <- export <- serve/commands.

The names below are imported on first use, so that `import muse_tvr.engine.tokenizer` (or `.video`) in a
client or a Triton Python model needs numpy, not torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"PRESETS": ".engine.config", "MuseConfig": ".engine.config", "get_config": ".engine.config",
         "MuseModel": ".engine.model", "ClipTokenizer": ".engine.tokenizer", "load_model": ".engine.weights",
         "save_pretrained": ".engine.weights"}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
