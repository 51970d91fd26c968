"""Request tensors for the served MUSE models, with numpy only (no torch): what a client sends.

  captions_tensor(["a dog", ...])        -> object array [n, 1] of UTF-8 bytes   (input `text`)
  video_tensors(path, size, max_frames)  -> frames FP32 [1, T, 3, S, S], mask FP32 [1, T]
                                            (inputs `frames`, `mask`; sampled as `muse-tvr encode` does)
  video_bytes_tensor([path, ...])        -> object array [n, 1] of file bytes    (input `video`)

The server's model metadata gives T (max_frames) and S (image_size): dims of `frames`.

The server side of the same tensors, also numpy-only (the Triton Python models of an exported repository
and `muse-tvr serve` both call these):

  caption_strings(text [n, 1] bytes)                 -> n captions (UTF-8, not blank) or ValueError
  tokenize_captions(text, max_words)                 -> {"ids": INT64 [n, max_words]}
  decode_videos(video [n, 1] bytes, size, max_frames) -> {"frames": FP32 [n, T, 3, S, S], "mask": FP32 [n, T]}
"""
from __future__ import annotations

import os
import tempfile
from functools import lru_cache
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


def caption_strings(text: np.ndarray, name: str = "text") -> list[str]:
    out = []
    for i, raw in enumerate(np.asarray(text, dtype=object).reshape(-1)):
        try:
            caption = raw.decode("utf-8") if isinstance(raw, (bytes, np.bytes_)) else str(raw)
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}[{i}] is not UTF-8 ({e})") from None
        if not caption.strip():
            raise ValueError(f"{name}[{i}] is empty: send a caption")
        out.append(caption)
    return out


@lru_cache(maxsize=1)
def _tokenizer():
    from ..engine.tokenizer import ClipTokenizer
    return ClipTokenizer()


def tokenize_captions(text: np.ndarray, max_words: int = 32) -> dict[str, np.ndarray]:
    captions = caption_strings(text)
    try:
        return {"ids": _tokenizer().ids_array(captions, max_words)}
    except ValueError as e:  # e.g. a caption of only characters that cleaning removes
        raise ValueError(f"text: {e}") from None


def decode_video_bytes(blob: bytes, size: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One encoded video file's bytes -> frames FP32 (max_frames, 3, S, S), mask FP32 (max_frames,)."""
    from ..engine.video import VideoError, load_video

    if not len(blob):
        raise ValueError("empty: send the bytes of a video file")
    # load_video reads files (PyAV probes, and decodes twice when the container's frame count is wrong);
    # a temporary file makes the decode exactly what `muse-tvr encode` does with the same bytes on disk.
    with tempfile.NamedTemporaryFile(suffix=".video") as tmp:
        tmp.write(bytes(blob))
        tmp.flush()
        try:
            sampled = load_video(tmp.name, size=size, max_frames=max_frames)
        except VideoError as e:
            raise ValueError(str(e).replace(tmp.name, "").lstrip(": ")) from None
    return sampled.model_input_array(max_frames)


def decode_videos(video: np.ndarray, size: int, max_frames: int) -> dict[str, np.ndarray]:
    frames, masks = [], []
    for i, blob in enumerate(np.asarray(video, dtype=object).reshape(-1)):
        try:
            f, m = decode_video_bytes(blob, size, max_frames)
        except ValueError as e:
            raise ValueError(f"video[{i}]: {e}") from None
        frames.append(f)
        masks.append(m)
    return {"frames": np.stack(frames), "mask": np.stack(masks)}
