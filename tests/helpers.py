"""Shared test utilities: one closeness check that reports errors, and the upstream oracles."""
from __future__ import annotations

import sys
import types

import torch


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0,
                 name: str = "") -> None:
    """|actual - expected| <= atol + rtol * |expected| everywhere; the message gives max abs/rel error."""
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    if not bool((err <= bound).all()):
        rel = (err / e.abs().clamp(min=1e-12)).max().item()
        raise AssertionError(f"{name}: max abs err {err.max().item():.3e}, max rel err {rel:.3e}, "
                             f"{int((err > bound).sum())} of {err.numel()} beyond atol={atol} rtol={rtol}")


def upstream_refs():
    """mamba-ssm's `selective_scan_ref` and causal-conv1d's `causal_conv1d_ref`, the upstream
    pure-PyTorch references. Their packages import compiled CUDA modules at import time; on CPU those are
    absent, so empty stand-in modules are registered first (only the pure-PyTorch functions are used)."""
    for name in ("selective_scan_cuda", "causal_conv1d_cuda", "causal_conv1d_cuda_lib"):
        sys.modules.setdefault(name, types.ModuleType(name))
    from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    return selective_scan_ref, causal_conv1d_ref
