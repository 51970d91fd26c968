"""Plain PyTorch depthwise conv1d over time: the oracle for the fast kernels.

Layout is (B, L, D) because that is what `in_proj` produces; upstream `causal_conv1d_ref` uses
(B, D, L), and the tests compare the two through a transpose.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      activation: str | None = "silu", reverse: bool = False) -> torch.Tensor:
    """Depthwise conv over the L axis.

    x: (B, L, D) float; weight: (D, W) or (D, 1, W); bias: (D,) or None.
    reverse=False: causal, y_t = sum_k w[k] * x[t - (W-1) + k].
    reverse=True: anti-causal, the same filter run over the time-reversed sequence and reversed back,
    y_t = sum_k w[k] * x[t + (W-1) - k]; this is the backward branch of a bidirectional Mamba.
    Computes in float32, returns x.dtype, shape (B, L, D).
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, L, D), got shape {tuple(x.shape)}")
    w = weight.reshape(weight.shape[0], -1)
    d, width = w.shape
    if x.shape[-1] != d:
        raise ValueError(f"x has {x.shape[-1]} channels but the weight has {d}")
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    # Both directions pad W-1 on each side; the anti-causal one runs the time-reversed filter and keeps
    # the last L outputs. No flip of the activations, so an exported graph has no negative-step Slice.
    length = x.shape[1]
    taps = w.float() if not reverse else w.float().flip(-1)
    y = F.conv1d(x.float().transpose(1, 2), taps.unsqueeze(1), None if bias is None else bias.float(),
                 padding=width - 1, groups=d)
    y = (y[..., width - 1:] if reverse else y[..., :length]).transpose(1, 2)
    if activation == "silu":
        y = F.silu(y)
    return y.to(x.dtype)


def bidirectional_causal_conv_ref(x: torch.Tensor, w_f: torch.Tensor, b_f: torch.Tensor | None,
                                  w_b: torch.Tensor, b_b: torch.Tensor | None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both conv branches of a bidirectional Mamba with SiLU: (causal with w_f, anti-causal with w_b).
    x: (B, L, D); returns (u_f, u_b), each (B, L, D) in x.dtype."""
    return (causal_conv1d_ref(x, w_f, b_f, activation="silu", reverse=False),
            causal_conv1d_ref(x, w_b, b_b, activation="silu", reverse=True))
