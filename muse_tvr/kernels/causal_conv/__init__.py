"""Depthwise causal / anti-causal conv1d with bias and optional SiLU, (B, L, D) layout.

The Triton kernel is imported lazily (`bidirectional_causal_conv_triton`) so that the references work
without Triton installed."""
from .reference import bidirectional_causal_conv_ref, causal_conv1d_ref

__all__ = ["causal_conv1d_ref", "bidirectional_causal_conv_ref", "bidirectional_causal_conv_triton"]


def __getattr__(name):
    if name in ("bidirectional_causal_conv_triton", "AOT_SPECS"):
        from . import triton_conv
        return getattr(triton_conv, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
