"""Both conv branches as W shifted multiply-adds in the token-major (B, L, D) layout, for CPU.

Same contract as `bidirectional_causal_conv_ref`. The reference runs torch's conv1d, which wants (B, D, L):
the transposes around it cost two copies per branch and leave a strided result that the next GEMM and the
scan copy again. Here every tap is one fused multiply-add over a contiguous (B, L, D) slab of the
zero-padded input, and the output is contiguous; arithmetic is float32, summed in tap order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bidirectional_causal_conv_taps(x: torch.Tensor, w_f: torch.Tensor, b_f: torch.Tensor | None,
                                   w_b: torch.Tensor, b_b: torch.Tensor | None
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, L, D) float (row-strided views allowed); w_* (D, W) or (D, 1, W); b_* (D,) or None.
    Returns (u_f, u_b): SiLU of the causal conv with w_f and of the anti-causal conv with w_b, x.dtype."""
    if x.dim() != 3:
        raise ValueError(f"x must be (B, L, D), got shape {tuple(x.shape)}")
    length, d = x.shape[1], x.shape[2]
    out, padded = [], {}  # both branches read the same padded copy when their widths agree (MUSE: always)
    for w, bias, reverse in ((w_f, b_f, False), (w_b, b_b, True)):
        w = w.reshape(w.shape[0], -1).float()
        if w.shape[0] != d:
            raise ValueError(f"x has {d} channels but the weight has {w.shape[0]}")
        width = w.shape[1]
        # xp[:, j] = x[:, j - (W-1)]: causal y_t = sum_k w_k xp[t+k]; anti-causal y_t = sum_k w_k xp[t+2(W-1)-k].
        if width not in padded:
            padded[width] = F.pad(x.float(), (0, 0, width - 1, width - 1))
        xp = padded[width]
        y = (x.new_zeros((x.shape[0], length, d), dtype=torch.float32) if bias is None
             else bias.float().expand(x.shape[0], length, d).clone())
        for k in range(width):
            start = 2 * (width - 1) - k if reverse else k
            y.addcmul_(xp[:, start:start + length], w[:, k])
        out.append(F.silu(y, inplace=True).to(x.dtype))
    return out[0], out[1]
