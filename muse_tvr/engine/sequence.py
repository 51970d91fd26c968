"""Sequence assembly and readout (muse-model.md sections 4 and 6).

Three token orders exist in the reference code; "scale_wise" is the released one:
- scale_wise:   [cls_0..cls_{T-1}] + [level 0 of all frames, frame-major] + [level 1 ...] + ...
- frame_wise:   for each frame t: [cls_t, level 0 of t, level 1 of t, ...]
- spatial_wise: [cls_0..cls_{T-1}] + [each level averaged over frames, level by level]
No positional or type embeddings are added anywhere.
"""
from __future__ import annotations

import torch


def assemble_sequence(cls: torch.Tensor, levels: list[torch.Tensor], order: str = "scale_wise") -> torch.Tensor:
    """cls: (B, T, C); levels: list of (B, T, n_i, C). Returns (B, L, C)."""
    b, t, c = cls.shape
    if order == "scale_wise":
        return torch.cat([cls] + [lv.reshape(b, -1, c) for lv in levels], dim=1)
    if order == "frame_wise":
        per_frame = torch.cat([cls.unsqueeze(2)] + levels, dim=2)  # (B, T, 1 + sum n_i, C)
        return per_frame.reshape(b, -1, c)
    if order == "spatial_wise":
        return torch.cat([cls] + [lv.mean(dim=1) for lv in levels], dim=1)
    raise ValueError(f"unknown sequence order {order!r}")


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
