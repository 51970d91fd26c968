"""Pixels to model input: CLIP normalisation and zero-padding to max_frames (docs/model.md section 1).

Decoding and resizing live in the video module; this module starts from already-cropped RGB frames.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import CLIP_MEAN, CLIP_STD


def normalize(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames (T, S, S, 3) -> CLIP-normalised float32 (T, 3, S, S)."""
    x = torch.as_tensor(np.asarray(frames))
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB in [0, 255], got {x.dtype}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pad_frames(frames: torch.Tensor, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 3, S, S) normalised frames, T <= max_frames -> zeros-padded (max_frames, 3, S, S) and mask
    (max_frames,) float with 1 for real frames first. Padding is zero in normalised space, as in the
    reference, and padded frames still run through the model."""
    t = frames.shape[0]
    if t == 0:
        raise ValueError("a video needs at least one frame")
    if t > max_frames:
        raise ValueError(f"{t} frames exceed max_frames={max_frames}; sample them down first")
    out = frames.new_zeros((max_frames, *frames.shape[1:]))
    out[:t] = frames
    return out, (torch.arange(max_frames) < t).float()
