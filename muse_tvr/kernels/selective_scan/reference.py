"""Plain PyTorch selective scan: a loop over time with a float32 state. The oracle for the kernels.

Layout is token-major (B, L, D) (what the projections produce), unlike upstream mamba-ssm's
(B, D, L); the tests compare against upstream `selective_scan_ref` through transposes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


# mamba-ssm's softplus threshold: identity above it, log1p(exp(x)) below (the kernels use the same value).
SOFTPLUS_THRESHOLD = 20.0


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > SOFTPLUS_THRESHOLD, x, torch.log1p(torch.exp(x)))


def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                       C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                       delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                       reverse: bool = False) -> torch.Tensor:
    """One direction of the selective scan.

    u, delta: (Bt, L, D); A: (D, N) float32; B, C: (Bt, L, N); D: (D,) or None; z: (Bt, L, D) or None;
    delta_bias: (D,) or None, added to delta BEFORE the softplus.
      s_t = exp(dt_t * A) * s_prev + (dt_t * u_t) B_t ;  y_t = s_t . C_t + D * u_t ;  y *= silu(z)
    reverse=True walks t = L-1 .. 0 (s_prev is the state at t+1), which equals flipping the inputs
    along L, scanning forward and flipping the output back.
    The state and arithmetic are float32; the output is (Bt, L, D) in u.dtype.
    """
    _check_shapes(u, delta, A, B, C)
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = _softplus(dt)
    uf, Bf, Cf, Af = u.float(), B.float(), C.float(), A.float()
    bt, length, d = u.shape
    state = u.new_zeros((bt, d, A.shape[1]), dtype=torch.float32)
    ys = [None] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        decay = torch.exp(dt[:, t, :, None] * Af)                     # (Bt, D, N)
        state = decay * state + (dt[:, t] * uf[:, t])[:, :, None] * Bf[:, t, None, :]
        ys[t] = torch.einsum("bdn,bn->bd", state, Cf[:, t])
    y = torch.stack(ys, dim=1) if length else uf.new_zeros(uf.shape)
    if D is not None:
        y = y + uf * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)


def bidirectional_scan_ref(u_f: torch.Tensor, delta_f: torch.Tensor, B_f: torch.Tensor, C_f: torch.Tensor,
                           u_b: torch.Tensor, delta_b: torch.Tensor, B_b: torch.Tensor, C_b: torch.Tensor,
                           z: torch.Tensor, A_f: torch.Tensor, A_b: torch.Tensor, D_f: torch.Tensor,
                           D_b: torch.Tensor, delta_bias_f: torch.Tensor, delta_bias_b: torch.Tensor
                           ) -> torch.Tensor:
    """The two scans of a Vim "v2" bidirectional Mamba, gated once: silu(z) * (y_f + y_b).

    All sequence tensors are in the ORIGINAL token order, (Bt, L, D) or (Bt, L, N) for B/C; the backward
    direction scans t = L-1 .. 0. Softplus is applied to delta + delta_bias in both directions.
    Returns (Bt, L, D) in u_f.dtype.
    """
    y_f = selective_scan_ref(u_f, delta_f, A_f, B_f, C_f, D_f, None, delta_bias_f, True, reverse=False)
    y_b = selective_scan_ref(u_b, delta_b, A_b, B_b, C_b, D_b, None, delta_bias_b, True, reverse=True)
    y = (y_f.float() + y_b.float()) * F.silu(z.float())
    return y.to(u_f.dtype)


def _check_shapes(u, delta, A, B, C) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (B, L, D), got {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta {tuple(delta.shape)} must match u {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != u.shape[2]:
        raise ValueError(f"A must be (D={u.shape[2]}, N), got {tuple(A.shape)}")
    want = (u.shape[0], u.shape[1], A.shape[1])
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must be (B, L, N) = {want}, got {tuple(t.shape)}")
