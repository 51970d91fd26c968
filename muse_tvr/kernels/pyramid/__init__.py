"""Feature pyramid + sequence assembly: the plain reference and the fused Triton kernels.

The reference imports eagerly; the Triton module is imported on first use, so the package (and the
reference) works without Triton installed.
"""
from .reference import pyramid_level_ref, pyramid_sequence_ref, stage_params

__all__ = ["pyramid_sequence_ref", "pyramid_level_ref", "stage_params", "build_sequence_triton",
           "fused_pyramid_sequence", "pack_pyramid", "pyramid_sequence_triton", "benchmark_pyramid"]

_TRITON_NAMES = {"build_sequence_triton", "fused_pyramid_sequence", "pack_pyramid",
                 "pyramid_sequence_triton", "benchmark_pyramid"}


def __getattr__(name):
    if name in _TRITON_NAMES:
        from . import triton_pyramid
        return getattr(triton_pyramid, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
