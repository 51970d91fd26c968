"""Readout, pooling and input checks of the learner: docs/model.md sections 4 and 6. The sequence itself
is assembled by the pyramid op (muse_tvr.kernels.pyramid.assemble_sequence, which documents the orders).
"""
from __future__ import annotations

import torch


def readout(seq_out: torch.Tensor, frames: int, order: str = "scale_wise") -> torch.Tensor:
    """The per-frame outputs the video embedding is read from: (B, L, C) -> (B, T, C)."""
    if order == "frame_wise":
        stride = seq_out.shape[1] // frames
        return seq_out[:, ::stride][:, :frames]
    return seq_out[:, :frames]


def pool_frames(frame_feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalise per frame, masked mean over frames, normalise again: (B, T, C), (B, T) -> (B, C) float32."""
    v = frame_feats.float()
    v = v / v.norm(dim=-1, keepdim=True)
    m = mask.to(v.dtype).unsqueeze(-1)
    v = (v * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return v / v.norm(dim=-1, keepdim=True)


def check_tokens(tokens: torch.Tensor, grid: int, channels: int) -> None:
    """Validate CLIP tokens (B, T, 1 + grid*grid, channels) of a floating dtype, the learner's input."""
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    n = 1 + grid * grid
    if tokens.dim() != 4 or tokens.shape[2] != n or tokens.shape[3] != channels:
        raise ValueError(f"tokens must have shape (B, T, {n}, {channels}), got {tuple(tokens.shape)}")
    if not tokens.is_floating_point():
        raise ValueError(f"tokens must be floating point, got {tokens.dtype}")


def check_mask(mask: torch.Tensor | None, b: int, t: int, device: torch.device | str) -> torch.Tensor:
    """Validate a frame mask (B, T) of 0/1 on `device`; None means every frame is real."""
    if mask is None:
        return torch.ones(b, t, device=device)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, t):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape (B, T) = ({b}, {t}), got {shape}")
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 (padding) and 1 (real frame)")
    return mask.to(device)
