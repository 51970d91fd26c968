"""Pixels to model input: CLIP normalisation and zero-padding to max_frames (docs/model.md section 1).

Decoding and resizing live in the video module; this module starts from already-cropped RGB frames.
The `*_array` functions need numpy only (a Triton client or a Python-backend model need not carry torch);
`normalize` and `pad_frames` are the same arithmetic returning torch tensors for the engine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# OpenAI CLIP's pixel statistics (RGB); engine.config re-exports them
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_array(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB frames (T, S, S, 3) -> CLIP-normalised float32 (T, 3, S, S), numpy only."""
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(x.shape)}")
    if x.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB in [0, 255], got {x.dtype}")
    # float32 at every step (as torch computes it), so both entry points give the same bits
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(CLIP_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(CLIP_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def pad_frames_array(frames: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, S, S) normalised frames, T <= max_frames -> zeros-padded (max_frames, 3, S, S) and mask
    (max_frames,) float32 with 1 for real frames first. Padding is zero in normalised space, as in the
    reference, and padded frames still run through the model."""
    t = frames.shape[0]
    if t == 0:
        raise ValueError("a video needs at least one frame")
    if t > max_frames:
        raise ValueError(f"{t} frames exceed max_frames={max_frames}; sample them down first")
    out = np.zeros((max_frames, *frames.shape[1:]), dtype=frames.dtype)
    out[:t] = frames
    return out, (np.arange(max_frames) < t).astype(np.float32)


def normalize(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames (T, S, S, 3) -> CLIP-normalised float32 torch tensor (T, 3, S, S)."""
    import torch

    return torch.from_numpy(normalize_array(np.asarray(frames)))


def pad_frames(frames: torch.Tensor, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pad_frames_array` on a torch tensor (T, 3, S, S) -> (max_frames, 3, S, S), mask (max_frames,)."""
    import torch

    out, mask = pad_frames_array(frames.detach().cpu().numpy(), max_frames)
    return torch.from_numpy(out).to(frames.device), torch.from_numpy(mask)
