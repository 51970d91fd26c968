"""The feature pyramid's parameters over the last-layer CLIP token map: docs/model.md section 3.

Module structure and construction order mirror the reference code exactly: one `nn.Sequential` per
scale, built in the same order with PyTorch's default initialisers. That matters twice: the state-dict
keys (`mamba_stages.{scale}.{index}.*`) are the pyramid sidecar's key names, and the order of random
draws at construction is what `muse_tvr.engine.sidecar` replays to recreate untrained reference weights.
The math is the backend's pyramid op (reference: `muse_tvr.kernels.pyramid.pyramid_sequence_ref`); the
Sequentials hold parameters and are never called, so their LayerNorms are plain containers too.
"""
from __future__ import annotations

import torch
from torch import nn

from .backend import REFERENCE, Backend
from .config import HeadConfig, VisionConfig


def build_stage(dim: int, scale: float) -> nn.Sequential:
    """One pyramid level: a resampling prefix, then Conv1x1 -> LN -> GELU -> Conv3x3 -> LN."""
    if scale == 4.0:
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            nn.LayerNorm(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
        in_dim = dim // 4
    elif scale == 2.0:
        layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
        in_dim = dim // 2
    elif scale == 1.0:
        layers, in_dim = [], dim
    elif scale in (0.5, 0.25):
        layers, in_dim = [nn.MaxPool2d(kernel_size=round(1 / scale), stride=round(1 / scale))], dim
    else:
        raise ValueError(f"unsupported pyramid scale {scale}")
    layers += [
        nn.Conv2d(in_dim, dim, kernel_size=1),
        nn.LayerNorm(dim),
        nn.GELU(),
        nn.Conv2d(dim, dim, kernel_size=3, padding=1),
        nn.LayerNorm(dim),
    ]
    return nn.Sequential(*layers)


class FeaturePyramid(nn.Module):
    """Multi-scale maps from the CLIP patch tokens of every frame, assembled into the head's sequence.

    forward(tokens, backend): tokens (B, T, 1+g*g, C) CLS then the row-major patch grid, C = d_model, in
    the parameters' dtype. Returns (B, L, C) in that dtype (LayerNorms compute in float32), tokens ordered
    as `head.order` says (muse_tvr.kernels.pyramid.assemble_sequence).
    """

    def __init__(self, head: HeadConfig, vision: VisionConfig):
        super().__init__()
        self.grid = vision.grid
        self.scales = tuple(head.scales)
        self.order = head.order
        self.eps = head.layer_norm_eps
        self.mamba_stages = nn.ModuleList(build_stage(head.d_model, s) for s in self.scales)

    def forward(self, tokens: torch.Tensor, backend: Backend = REFERENCE) -> torch.Tensor:
        return backend.pyramid(tokens, self, self.scales, self.order, self.eps)
