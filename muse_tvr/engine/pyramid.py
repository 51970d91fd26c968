"""The feature pyramid over the last-layer CLIP token map (muse-model.md section 3).

Module structure and construction order mirror the reference code exactly: one `nn.Sequential` per
scale, built in the same order with PyTorch's default initialisers. That matters twice: the state-dict
keys (`mamba_stages.{scale}.{index}.*`) are the pyramid sidecar's key names, and the order of random
draws at construction is what `muse_tvr.engine.sidecar` replays to recreate untrained reference weights.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import HeadConfig, VisionConfig, scale_grid


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW map, computed in float32, returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        y = nn.functional.layer_norm(y.float(), self.normalized_shape, self.weight.float(),
                                     self.bias.float(), self.eps)
        return y.to(x.dtype).permute(0, 3, 1, 2)


def build_stage(dim: int, scale: float) -> nn.Sequential:
    """One pyramid level: a resampling prefix, then Conv1x1 -> LN -> GELU -> Conv3x3 -> LN."""
    if scale == 4.0:
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            ChannelLayerNorm(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
        in_dim = dim // 4
    elif scale == 2.0:
        layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
        in_dim = dim // 2
    elif scale == 1.0:
        layers, in_dim = [], dim
    elif scale == 0.5:
        layers, in_dim = [nn.MaxPool2d(kernel_size=2, stride=2)], dim
    elif scale == 0.25:
        layers, in_dim = [nn.MaxPool2d(kernel_size=4, stride=4)], dim
    else:
        raise ValueError(f"unsupported pyramid scale {scale}")
    layers += [
        nn.Conv2d(in_dim, dim, kernel_size=1),
        ChannelLayerNorm(dim),
        nn.GELU(),
        nn.Conv2d(dim, dim, kernel_size=3, padding=1),
        ChannelLayerNorm(dim),
    ]
    return nn.Sequential(*layers)


class FeaturePyramid(nn.Module):
    """Multi-scale maps from the CLIP patch tokens of every frame.

    forward(patches): patches (B, T, grid*grid, C) row-major (h, w) patch tokens, C = d_model, any float
    dtype. Returns one tensor per scale, (B, T, h*w, C) with tokens in row-major (h, w) order, in the
    dtype of the input (LayerNorms run in float32 internally).
    """

    def __init__(self, head: HeadConfig, vision: VisionConfig):
        super().__init__()
        self.dim = head.d_model
        self.grid = vision.grid
        self.scales = tuple(head.scales)
        self.mamba_stages = nn.ModuleList(build_stage(self.dim, s) for s in self.scales)

    def level_sides(self) -> list[int]:
        return [scale_grid(self.grid, s) for s in self.scales]

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        b, t, n, c = patches.shape
        if n != self.grid * self.grid or c != self.dim:
            raise ValueError(f"pyramid expects patch tokens (B, T, {self.grid * self.grid}, {self.dim}), "
                             f"got {tuple(patches.shape)}")
        fmap = patches.reshape(b * t, self.grid, self.grid, c).permute(0, 3, 1, 2)
        out = []
        for stage in self.mamba_stages:
            y = stage(fmap)  # (B*T, C, h, w)
            out.append(y.reshape(b, t, c, -1).transpose(2, 3))
        return out
