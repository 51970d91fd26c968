"""Selective scan (Mamba-1 SSM recurrence), single and bidirectional, (B, L, D) layout.

The Triton kernel (`bidirectional_scan_triton`, same signature as `bidirectional_scan_ref`) is imported
lazily so that the references work without Triton installed."""
from .reference import bidirectional_scan_ref, selective_scan_ref

__all__ = ["selective_scan_ref", "bidirectional_scan_ref", "bidirectional_scan_triton"]


def __getattr__(name):
    if name in ("bidirectional_scan_triton", "AOT_SPECS"):
        from . import triton_scan
        return getattr(triton_scan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
