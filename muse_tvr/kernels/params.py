"""Weights derived from a module's parameters (folded, negated, packed for a kernel): computed once and
recomputed only when a parameter changes, the same way for every backend.

A derived value is keyed by (module, name) and stamped with `fingerprint(module)`, which changes when any
parameter is replaced, moved, cast or modified in place (in-place loads bump a tensor's version counter).
While torch.export / the ONNX exporter traces, `derived` calls `build` inside the graph instead: the
exported graph then computes the value from its initializers and the runtimes fold it to a constant.
"""
from __future__ import annotations

import weakref
from typing import Callable, TypeVar

import torch

V = TypeVar("V")
_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def fingerprint(module: torch.nn.Module) -> tuple:
    """Host-side identity of every parameter (pointer, version, dtype, device); no device sync."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())


def derived(module: torch.nn.Module, name: str, build: Callable[[], V]) -> V:
    """`build()` (no grad), cached on `module` under `name` until its parameters change.

    A module in training mode with gradients enabled gets a fresh `build()` with autograd on and nothing
    is cached: the value must carry gradients back to the parameters it folds (scripts/train_synthetic.py).
    """
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return build()
    if module.training and torch.is_grad_enabled():
        return build()
    fp = fingerprint(module)
    slot = _CACHE.setdefault(module, {})
    hit = slot.get(name)
    if hit is None or hit[0] != fp:
        with torch.no_grad():
            hit = (fp, build())
        slot[name] = hit
    return hit[1]
