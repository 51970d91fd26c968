"""Backends: which implementation of each op the one MUSE model (mamba.py, model.py) runs.

A backend is a table of ops, each with its reference's contract (muse_tvr.kernels.<op>.IMPLEMENTATIONS):
  conv      bidirectional_causal_conv_ref(x, w_f, b_f, w_b, b_b) -> (u_f, u_b)
  scan      bidirectional_scan_ref(...), called with keyword arguments
  pyramid   pyramid_sequence_ref(tokens, params, scales, order, eps) -> (B, L, C)
or, for a route that runs the whole learner elsewhere (ONNX Runtime, registered by muse_tvr.export),
a `learner(model, tokens, mask) -> (B, C)`.

  reference    plain PyTorch everywhere: the oracle
  cpu-chunked  the blocked PyTorch scan; pure PyTorch, any device
  cpp          the C++ scan (kernels/selective_scan/bi_scan.h), built on first use; CPU
  triton       the fused Triton conv, scan and pyramid; CUDA (CPU only under TRITON_INTERPRET=1, tests)
  auto         triton on CUDA; on CPU cpp, or cpu-chunked with a one-line warning when it cannot build
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..kernels import causal_conv, interpreter_problem, pyramid, selective_scan, triton_interpreting


@dataclass(frozen=True)
class Backend:
    name: str
    conv: Callable | None = None
    scan: Callable | None = None
    pyramid: Callable | None = None
    learner: Callable | None = None
    # device -> None when the backend can run on it, else a sentence saying why not
    unavailable: Callable[[torch.device], str | None] = lambda device: None


def _triton_unavailable(device: torch.device) -> str | None:
    import importlib.util
    if importlib.util.find_spec("triton") is None:
        return "backend 'triton' needs the triton package (pip install triton)"
    if interpreter_problem():
        return f"backend 'triton': {interpreter_problem()}"
    if device.type != "cuda" and not triton_interpreting():
        return (f"backend 'triton' on {device.type} tensors needs TRITON_INTERPRET=1 set before muse_tvr is "
                "imported (the interpreter is slow: tests only); use 'auto'")
    return None


def _cpp_unavailable(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"backend 'cpp' runs on CPU tensors, got {device.type}"
    reason = selective_scan.cpp_scan_unavailable()
    return None if reason is None else f"backend 'cpp': {reason}"


def _ops(name: str, conv: str, scan: str, pyr: str, unavailable=None) -> Backend:
    return Backend(name, causal_conv.IMPLEMENTATIONS[conv], selective_scan.IMPLEMENTATIONS[scan],
                   pyramid.IMPLEMENTATIONS[pyr], unavailable=unavailable or (lambda device: None))


_REGISTRY: dict[str, Backend] = {b.name: b for b in (
    _ops("reference", "reference", "reference", "reference"),
    _ops("cpu-chunked", "taps", "chunked", "reference"),
    _ops("cpp", "taps", "cpp", "reference", _cpp_unavailable),
    _ops("triton", "triton", "triton", "triton", _triton_unavailable),
)}
REFERENCE = _REGISTRY["reference"]

# Modules that register further backends when imported. They sit in a higher layer (export), so they are
# named here and imported on the registry's first use rather than imported by this module.
_PLUGIN_MODULES = ("muse_tvr.export.ort_runner",)
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True  # set first: a plugin's own register() call must not recurse here
        import importlib
        for module in _PLUGIN_MODULES:
            importlib.import_module(module)


def register(backend: Backend) -> None:
    """Add a backend (the export package adds "ort"); its name becomes a valid `set_backend` choice."""
    _REGISTRY[backend.name] = backend


def names() -> tuple[str, ...]:
    """Every accepted backend name, "auto" first: the one list the CLI, the benchmarks and tests use."""
    _load_plugins()
    return ("auto", *_REGISTRY)


def get(name: str) -> Backend:
    """The registered backend called `name` (not "auto": see `resolve`)."""
    _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def resolve(name: str | None, device: torch.device | str) -> Backend:
    """The backend that will actually run on `device`; ValueError naming the problem otherwise."""
    name = "auto" if name is None else name
    if name not in names():
        raise ValueError(f"backend must be one of {names()}, got {name!r}")
    device = torch.device(device)
    if name == "auto":
        if device.type == "cuda" and _triton_unavailable(device) is None:
            return _REGISTRY["triton"]
        if device.type == "cpu":
            return _REGISTRY["cpp" if selective_scan.fastest_cpu_scan() == "cpp" else "cpu-chunked"]
        return REFERENCE
    backend = get(name)
    reason = backend.unavailable(device)
    if reason:
        raise ValueError(reason)
    return backend
