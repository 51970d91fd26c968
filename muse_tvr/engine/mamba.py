"""The bidirectional ("Vim v2") Mamba mixer, the MUSE block and the Mamba head: docs/model.md section 5.

Parameter names equal the reference checkpoint's (`MS_mamba.{i}.mamba.in_proj.weight`, ...). This is the
one definition of the block's math; a backend (backend.py) supplies the conv, scan and pyramid kernels.
Both directions are written out explicitly, each with its own parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.params import derived
from .backend import REFERENCE, Backend
from .config import HeadConfig


class BiMamba(nn.Module):
    """The mixer's parameters (checkpoint keys `mamba.*`): in_proj, then per direction a depthwise conv,
    x_proj, dt_proj, A_log and D, then out_proj. `MuseBlock.forward` computes with them."""

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



class MuseBlock(nn.Module):
    """Pre-norm residual block: x + temporal_fc(out_proj(mixer(layer_norm1(x)))).

    forward(x (B, L, d) float, backend) -> (B, L, d) in x's dtype; the scan state is float32.
    out_proj (no bias) and temporal_fc meet with only an identity dropout between them at inference, so
    they run as one matrix W_fc @ W_out (`derived_weights`: folded in float32 or wider, stored in the
    head dtype).
    """

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mamba = BiMamba(cfg)
        # The reference initialises temporal_fc to zero (each block starts as the identity). A trained
        # checkpoint overwrites it; random demo/benchmark models keep PyTorch's default so that the head
        # does real work and its timings and tests mean something.
        self.temporal_fc = nn.Linear(cfg.d_model, cfg.d_model)

    def derived_weights(self) -> dict[str, torch.Tensor]:
        """Kernel-ready tensors computed from the parameters (cached until a parameter changes)."""
        def build() -> dict[str, torch.Tensor]:
            m = self.mamba
            dtype = m.out_proj.weight.dtype
            acc = torch.promote_types(dtype, torch.float32)
            w = {"w_out": (self.temporal_fc.weight.to(acc) @ m.out_proj.weight.to(acc)).to(dtype)}
            for tag, conv, A_log, D, dtp in (("f", m.conv1d, m.A_log, m.D, m.dt_proj),
                                             ("b", m.conv1d_b, m.A_b_log, m.D_b, m.dt_proj_b)):
                w[f"conv_{tag}"] = conv.weight[:, 0].contiguous()
                w[f"A_{tag}"] = -torch.exp(A_log.float())
                w[f"D_{tag}"] = D.float()
                w[f"delta_bias_{tag}"] = dtp.bias.float()
            return w
        return derived(self, "block", build)

    def forward(self, x: torch.Tensor, backend: Backend = REFERENCE) -> torch.Tensor:
        m, w = self.mamba, self.derived_weights()
        r, n = m.dt_rank, m.d_state
        xi, z = F.linear(self.layer_norm1(x), m.in_proj.weight).chunk(2, dim=-1)  # views: kernels read in place
        u_f, u_b = backend.conv(xi, w["conv_f"], m.conv1d.bias, w["conv_b"], m.conv1d_b.bias)
        xd_f, xd_b = F.linear(u_f, m.x_proj.weight), F.linear(u_b, m.x_proj_b.weight)
        y = backend.scan(
            u_f=u_f, delta_f=F.linear(xd_f[..., :r], m.dt_proj.weight), B_f=xd_f[..., r:r + n], C_f=xd_f[..., r + n:],
            u_b=u_b, delta_b=F.linear(xd_b[..., :r], m.dt_proj_b.weight), B_b=xd_b[..., r:r + n], C_b=xd_b[..., r + n:],
            z=z, A_f=w["A_f"], A_b=w["A_b"], D_f=w["D_f"], D_b=w["D_b"],
            delta_bias_f=w["delta_bias_f"], delta_bias_b=w["delta_bias_b"])  # dt bias + softplus inside
        return x + F.linear(y, w["w_out"], self.temporal_fc.bias)


class MuseHead(nn.Module):
    """The stack of MUSE blocks, no final norm. forward(seq (B, L, d), backend) -> (B, L, d)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.MS_mamba = nn.ModuleList(MuseBlock(cfg) for _ in range(cfg.depth))

    def forward(self, seq: torch.Tensor, backend: Backend = REFERENCE) -> torch.Tensor:
        for block in self.MS_mamba:
            seq = block(seq, backend)
        return seq
