"""Request tensors for the served MUSE models, with numpy only (no torch): what a client sends.

  captions_tensor(["a dog", ...])        -> object array [n, 1] of UTF-8 bytes   (input `text`)
  video_tensors(path, size, max_frames)  -> frames FP32 [1, T, 3, S, S], mask FP32 [1, T]
                                            (inputs `frames`, `mask`; sampled as `muse-tvr encode` does)
  video_bytes_tensor([path, ...])        -> object array [n, 1] of file bytes    (input `video`)

The server's model metadata gives T (max_frames) and S (image_size): dims of `frames`.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def captions_tensor(captions: Sequence[str]) -> np.ndarray:
    if isinstance(captions, str):
        captions = [captions]
    return np.array([[c.encode("utf-8")] for c in captions], dtype=object).reshape(len(captions), 1)


def video_tensors(source, size: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    from ..engine.video import load_video

    frames, mask = load_video(source, size=size, max_frames=max_frames).model_input_array(max_frames)
    return frames[None], mask[None]


def video_bytes_tensor(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    return np.array(blobs, dtype=object).reshape(len(blobs), 1)
