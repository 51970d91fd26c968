"""Run exported muse-tvr models in ONNX Runtime, by either route:

- `route="oplib"`:    the C++ custom-op library (`cpp/build/libmuse_ort_ops.so`, built by `make -C cpp`)
                      runs the custom nodes; load a `plugin-nofunc` (or any) file. As fast as the engine's
                      `cpp` backend, which runs the same C++ scan.
- `route="portable"`: plain ONNX Runtime inlines the model-local function bodies; needs a `portable` or
                      `plugin` file. No native code beyond onnxruntime itself.

`OrtModel(path, route)` checks inputs against the model before running (names, dtypes, ranks, fixed
dimensions) and raises ValueError naming the problem. `OrtHead` is the learner in a session:
tokens (B, T, 1+g*g, C) + mask (B, T) -> embedding (B, C) float32. Importing this module registers it as
the engine's "ort" backend, the one whole-learner route.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..engine.backend import Backend, register
from ..kernels.params import derived

ROUTES = ("oplib", "portable")
_REPO = Path(__file__).resolve().parents[2]
DEFAULT_OPLIB = _REPO / "cpp" / "build" / "libmuse_ort_ops.so"
_NP_OF = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def find_op_library(path: str | os.PathLike | None = None) -> Path:
    """The op library: `path`, else $MUSE_ORT_OPS, else cpp/build/libmuse_ort_ops.so in this checkout."""
    p = Path(path or os.environ.get("MUSE_ORT_OPS") or DEFAULT_OPLIB)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX Runtime op library not found at {p}; build it with `make -C cpp` "
                                "(or set MUSE_ORT_OPS to its path)")
    return p


def session(path: str | os.PathLike, route: str = "oplib", op_library: str | os.PathLike | None = None,
            threads: int | None = None):
    import onnxruntime as ort

    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose from {ROUTES}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    if route == "oplib":
        so.register_custom_ops_library(str(find_op_library(op_library)))
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        hint = ""
        if route == "portable" and "muse" in str(e):
            hint = (" (this file has no function bodies for the muse custom ops: use the portable or plugin "
                    "variant, or route='oplib')")
        raise ValueError(f"ONNX Runtime cannot load {path} with route {route!r}: {e}{hint}") from e


class OrtModel:
    """An exported model in an ORT session. `run(**inputs)` or `run(dict)` -> dict of numpy outputs."""

    def __init__(self, path: str | os.PathLike, route: str = "oplib", op_library=None, threads: int | None = None):
        self.path = Path(path)
        self.route = route
        self.session = session(path, route, op_library, threads)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check_inputs(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feed]
        extra = [n for n in feed if n not in self.inputs]
        if missing or extra:
            raise ValueError(f"{self.path.name}: inputs must be exactly {list(self.inputs)}; "
                             f"missing {missing}, unknown {extra}")
        out = {}
        for name, spec in self.inputs.items():
            x = feed[name]
            if hasattr(x, "detach"):  # torch tensor
                x = x.detach().cpu().numpy()
            x = np.asarray(x)
            want = _NP_OF.get(spec.type)
            if want is None or x.dtype != want:
                raise ValueError(f"{self.path.name}: input {name!r} must be {np.dtype(want).name if want else spec.type}, "
                                 f"got {x.dtype}")
            if x.ndim != len(spec.shape):
                raise ValueError(f"{self.path.name}: input {name!r} must have {len(spec.shape)} dims "
                                 f"{tuple(spec.shape)}, got shape {x.shape}")
            for k, (d, n) in enumerate(zip(spec.shape, x.shape)):
                if isinstance(d, int) and d != n:
                    raise ValueError(f"{self.path.name}: input {name!r} dim {k} must be {d} "
                                     f"(expected {tuple(spec.shape)}), got shape {x.shape}")
            if 0 in x.shape:
                # ONNX Runtime's kernels are not guarded against empty batches (a division by zero in
                # the portable graph kills the process): refuse before running.
                raise ValueError(f"{self.path.name}: input {name!r} is empty (shape {x.shape}); give at "
                                 f"least one item")
            out[name] = np.ascontiguousarray(x)
        _check_mask(self.path.name, out)
        return out

    def run(self, feed: Mapping[str, Any] | None = None, **kwargs) -> dict[str, np.ndarray]:
        feed = self.check_inputs({**(feed or {}), **kwargs})
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


def _check_mask(model: str, feed: dict[str, np.ndarray]) -> None:
    """The engine's mask contract (sequence.check_mask): (B, T) of the frames/tokens, values 0 or 1."""
    import torch

    from ..engine.sequence import check_mask

    mask = feed.get("mask")
    if mask is None:
        return
    data = next((feed[n] for n in ("frames", "tokens") if n in feed), None)
    b, t = data.shape[:2] if data is not None else mask.shape
    try:
        check_mask(torch.from_numpy(mask), b, t, "cpu")
    except ValueError as e:
        raise ValueError(f"{model}: {e}") from None


class OrtHead:
    """The MUSE head (pyramid + Mamba blocks + pooling) on CPU through ONNX Runtime and the op library.

    `OrtHead.from_model(model, workdir)` exports the head of a `MuseModel` (float32, plugin-nofunc) and
    opens it; `OrtHead(path)` opens an existing export. Call: `head(tokens, mask)` with tokens
    (B, T, 1+g*g, C) float32 and mask (B, T) 0/1 (numpy or torch) -> (B, C) float32 numpy, unit norm.
    """

    def __init__(self, path: str | os.PathLike, route: str = "oplib", op_library=None, threads: int | None = None):
        self.model = OrtModel(path, route, op_library, threads)

    @classmethod
    def from_model(cls, model, workdir: str | os.PathLike, route: str = "oplib", **kw) -> "OrtHead":
        from .onnx_export import export_part

        variant = "plugin-nofunc" if route == "oplib" else "portable"
        files = export_part(model, "head", workdir, "float32", variants=(variant,), log=lambda *a: None)
        return cls(files[0].path, route, **kw)

    def __call__(self, tokens, mask=None) -> np.ndarray:
        if hasattr(tokens, "detach"):
            tokens = tokens.detach().cpu().float().numpy()
        tokens = np.asarray(tokens)
        if tokens.ndim != 4:
            raise ValueError(f"tokens must be (B, T, 1+g*g, C), got shape {tokens.shape}")
        if mask is None:
            mask = np.ones(tokens.shape[:2], dtype=np.float32)
        if hasattr(mask, "detach"):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask, dtype=np.float32)
        return self.model.run(tokens=tokens.astype(np.float32, copy=False), mask=mask)["embedding"]


def _ort_learner(model, tokens, mask):
    """MuseModel.encode_tokens through ONNX Runtime + the op library: (B, C) float32 torch tensor. The
    float32 learner is exported on first use (tens of seconds at ViT-B/32 size) and kept until a weight
    changes; its folder is removed once the session has read it."""
    import tempfile

    import torch

    def build() -> OrtHead:
        with tempfile.TemporaryDirectory(prefix="muse-tvr-ort-") as workdir:
            return OrtHead.from_model(model, workdir)
    return torch.from_numpy(derived(model, "ort-learner", build)(tokens.float(), mask.float()))


def _ort_unavailable(device) -> str | None:
    import importlib.util

    if device.type != "cpu":
        return f"backend 'ort' runs on CPU tensors, got {device.type}"
    if importlib.util.find_spec("onnxruntime") is None:
        return "backend 'ort' needs onnxruntime (pip install 'muse-tvr[export]')"
    try:
        find_op_library()
    except FileNotFoundError as e:
        return f"backend 'ort': {e}"
    return None


register(Backend("ort", learner=_ort_learner, unavailable=_ort_unavailable))
