"""The feature pyramid + sequence assembly: the plain reference and the fused Triton kernels.

IMPLEMENTATIONS maps a name to a function with `pyramid_sequence_ref`'s contract
(tokens, params, scales, order, eps) -> (B, L, C). The Triton module imports on first call, so the
reference works without Triton installed."""
from .reference import (LAYER_NORM_EPS, SEQUENCE_ORDERS, assemble_sequence, flat_params, pyramid_level_ref,
                        pyramid_sequence_ref, scale_grid, sequence_length, stage_params,
                        unflat_params)


def pyramid_sequence_triton(tokens, params, scales=(0.5, 1.0, 2.0), order="scale_wise", eps=LAYER_NORM_EPS):
    from .triton_pyramid import pyramid_sequence_triton as kernel
    return kernel(tokens, params, scales, order, eps)


IMPLEMENTATIONS = {"reference": pyramid_sequence_ref, "triton": pyramid_sequence_triton}

__all__ = ["LAYER_NORM_EPS", "SEQUENCE_ORDERS", "assemble_sequence", "flat_params", "unflat_params",
           "pyramid_level_ref", "pyramid_sequence_ref", "scale_grid", "sequence_length", "stage_params", "pyramid_sequence_triton",
           "IMPLEMENTATIONS"]
