"""Depthwise causal / anti-causal conv1d with bias and SiLU, (B, L, D) layout.

IMPLEMENTATIONS maps a name to a function with `bidirectional_causal_conv_ref`'s contract
(x, w_f, b_f, w_b, b_b) -> (u_f, u_b): "reference" (torch conv1d), "taps" (shifted multiply-adds in the
(B, L, D) layout, faster on CPU), "triton" (one GPU launch). The Triton kernel imports on first call, so the reference works
without Triton installed."""
from .cpu_taps import bidirectional_causal_conv_taps
from .reference import bidirectional_causal_conv_ref, causal_conv1d_ref


def bidirectional_causal_conv_triton(x, w_f, b_f, w_b, b_b):
    from .triton_conv import bidirectional_causal_conv_triton as kernel
    return kernel(x, w_f, b_f, w_b, b_b)


IMPLEMENTATIONS = {"reference": bidirectional_causal_conv_ref, "taps": bidirectional_causal_conv_taps,
                   "triton": bidirectional_causal_conv_triton}

__all__ = ["causal_conv1d_ref", "bidirectional_causal_conv_ref", "bidirectional_causal_conv_taps",
           "bidirectional_causal_conv_triton",
           "IMPLEMENTATIONS"]
