"""Bidirectional ("Vim v2") Mamba mixer, the MUSE block and the Mamba head (muse-model.md section 5).

Parameter names equal the reference checkpoint's (`MS_mamba.{i}.mamba.in_proj.weight`, ...). The math runs
on the plain references in `muse_tvr.kernels`; a faster backend can replace `BiMamba.inner` without
changing parameters.

Both directions are written out explicitly: Vim's slow path silently runs one direction only, so we never
rely on a `bimamba` flag.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.causal_conv import causal_conv1d_ref
from ..kernels.selective_scan import bidirectional_scan_ref
from .config import HeadConfig


class BiMamba(nn.Module):
    """forward(h): h (B, L, d_model) float -> (B, L, d_model), same dtype (scan state is float32)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        d, di, n, r = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.rank
        self.d_inner, self.d_state, self.dt_rank = di, n, r
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        # Forward-direction parameters, then the "_b" twins of the backward direction.
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, n))
        self.D = nn.Parameter(torch.empty(di))
        self.conv1d_b = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=True)
        self.x_proj_b = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj_b = nn.Linear(r, di, bias=True)
        self.A_b_log = nn.Parameter(torch.empty(di, n))
        self.D_b = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """Mamba's initialisation of the SSM parameters (S4D-real A, D = 1, dt log-uniform)."""
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        for A_log, D, dt_proj in ((self.A_log, self.D, self.dt_proj), (self.A_b_log, self.D_b, self.dt_proj_b)):
            A_log.copy_(torch.log(a))
            D.fill_(1.0)
            bound = self.dt_rank ** -0.5
            nn.init.uniform_(dt_proj.weight, -bound, bound)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=1e-4)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def direction_params(self, backward: bool):
        """(conv weight (D, W), conv bias, x_proj weight, dt_proj weight, dt bias, A = -exp(A_log), D)."""
        if backward:
            conv, xp, dtp, A_log, D = self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b
        else:
            conv, xp, dtp, A_log, D = self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D
        return (conv.weight.squeeze(1), conv.bias, xp.weight, dtp.weight, dtp.bias,
                -torch.exp(A_log.float()), D)

    def _branch_inputs(self, x: torch.Tensor, backward: bool):
        conv_w, conv_b, xp_w, dt_w, dt_b, A, D = self.direction_params(backward)
        u = causal_conv1d_ref(x, conv_w, conv_b, activation="silu", reverse=backward)
        xd = F.linear(u, xp_w)
        dt_in, Bm, Cm = torch.split(xd, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt_in, dt_w)  # dt bias is added inside the scan, before softplus
        return u, delta, Bm, Cm, A, D, dt_b

    def inner(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Conv, projections and both scans; returns silu(z) * (y_f + y_b), (B, L, d_inner)."""
        u_f, dl_f, B_f, C_f, A_f, D_f, b_f = self._branch_inputs(x, backward=False)
        u_b, dl_b, B_b, C_b, A_b, D_b, b_b = self._branch_inputs(x, backward=True)
        return bidirectional_scan_ref(u_f, dl_f, B_f, C_f, u_b, dl_b, B_b, C_b, z,
                                      A_f, A_b, D_f, D_b, b_f, b_b)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(h).chunk(2, dim=-1)
        return self.out_proj(self.inner(x, z))


class MuseBlock(nn.Module):
    """Pre-norm residual block: x + temporal_fc(mamba(layer_norm1(x))). (B, L, d) -> (B, L, d)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mamba = BiMamba(cfg)
        # The reference initialises temporal_fc to zero (each block starts as the identity). A trained
        # checkpoint overwrites it; for randomly initialised demo/benchmark models we keep PyTorch's
        # default so the head does real work and its timing and tests mean something.
        self.temporal_fc = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.temporal_fc(self.mamba(self.layer_norm1(x)))


class MuseHead(nn.Module):
    """The stack of MUSE blocks, no final norm. forward(seq (B, L, d)) -> (B, L, d)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.MS_mamba = nn.ModuleList(MuseBlock(cfg) for _ in range(cfg.depth))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        for block in self.MS_mamba:
            seq = block(seq)
        return seq
