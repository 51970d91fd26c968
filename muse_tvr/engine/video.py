"""Video files, frame folders and arrays -> the frames MUSE sees (docs/model.md section 1).

Sampling follows the reference loader (CLIP4Clip `RawVideoExtractorCV2` with `feature_framerate 1`,
`slice_framepos 2`):

  step    = int(fps)                       # OpenCV's CAP_PROP_FPS truncated: 29.97 fps -> 29
  indices = 0, step, 2*step, ...  < N      # one frame per "second"; a clip under 1 s keeps frame 0
  if len(indices) > max_frames: indices = indices[np.linspace(0, len(indices)-1, max_frames, dtype=int)]

where N is the number of frames the decoder delivers and frame numbers count decoded frames in
presentation order (what OpenCV's frame position means, also for variable frame rate video). The
reference loops over seconds 0..ceil(N/step) and stops at the first failed read, which is the same set.
When the fps is below 1 the reference divides by zero; here every frame is then taken (step 1).

Each kept frame is converted to RGB, resized with Pillow BICUBIC so its short side is `size` (long side
`int(size * long / short)`, torchvision's rule), and center-cropped with torchvision's rounding. The
result is bit-identical to torchvision `Resize(size, BICUBIC)` + `CenterCrop(size)` on the same PIL image.

Memory: a file is decoded as a stream; only the (at most max_frames) selected frames are kept, already
cropped, so a long video never sits in memory. The frame count comes from the container; when it is
missing (webm, mkv) the packets are counted first, and if the decoder then delivers a different number of
frames than predicted, a second pass decodes with the corrected selection (never a wrong sample).

Every failure is a `VideoError` whose message starts with the offending path.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .preprocess import normalize, normalize_array, pad_frames, pad_frames_array

if TYPE_CHECKING:
    import torch

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".flv",
                    ".wmv", ".3gp", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class VideoError(ValueError):
    """A video (file, frame folder or array) that cannot be read or sampled; the message names it."""


class VideoTruncatedWarning(UserWarning):
    """A video file decodes to less than its container declares; it was sampled from what decodes."""


@dataclass
class SampledVideo:
    """The frames kept from one video.

    frames:      uint8 (T, size, size, 3) RGB, already resized and center-cropped, 1 <= T <= max_frames
    indices:     source frame number of each kept frame (decoded-frame order / image order / array row)
    frame_count: frames in the source (decoded frames, images in the folder, rows of the array)
    fps:         the frame rate used for sampling (None when frames were given already sampled)
    duration:    seconds, from the container when it says, else frame_count / fps (None if unknown);
                 for a truncated file, the decoded part
    truncated:   the file decodes to fewer frames than its container declares (cut off); sampled from
                 what decodes. Galleries should flag such videos; `strict` loading refuses them.
    warnings:    one line per problem found while reading (empty when none)
    """

    source: str
    frames: np.ndarray
    indices: list[int]
    frame_count: int
    fps: float | None
    duration: float | None
    kind: str = "file"
    extra: dict = field(default_factory=dict)
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)

    def model_input(self, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-normalised float32 (max_frames, 3, S, S), zero-padded, and the mask (max_frames,)."""
        return pad_frames(normalize(self.frames), max_frames)

    def model_input_array(self, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """`model_input` as numpy float32 arrays (no torch): frames (max_frames, 3, S, S), mask (max_frames,)."""
        return pad_frames_array(normalize_array(self.frames), max_frames)


def _is_torch_tensor(x) -> bool:
    # torch is imported only by callers that use it: an object cannot be a tensor if torch is not loaded
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# ----- sampling: pure index arithmetic ----------------------------------------------------------
def uniform_subsample(n: int, max_frames: int) -> list[int]:
    """Positions kept out of n candidates: all if n <= max_frames, else linspace(0, n-1, max_frames)."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if n <= max_frames:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, num=max_frames, dtype=int)]


def reference_indices(frame_count: int, fps: float, max_frames: int) -> list[int]:
    """Frame numbers the reference loader keeps from a video of `frame_count` frames at `fps`."""
    if frame_count < 0:
        raise ValueError(f"frame_count must be >= 0, got {frame_count}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    per_second = range(0, frame_count, max(1, int(fps)))  # the reference truncates the rate: 29.97 -> 29
    return [per_second[i] for i in uniform_subsample(len(per_second), max_frames)]


# ----- pixels -------------------------------------------------------------------------------------
def resize_center_crop(image, size: int = 224):
    """PIL image -> RGB PIL image of size x size: BICUBIC short side to `size`, then center crop.

    Matches torchvision `Resize(size, BICUBIC)` + `CenterCrop(size)` + `.convert("RGB")` exactly.
    """
    from PIL import Image

    w, h = image.size
    if w < 1 or h < 1:
        raise ValueError(f"image has no pixels ({w}x{h})")
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):  # torchvision returns the image untouched when nothing changes
        image = image.resize((new_w, new_h), Image.BICUBIC)
    # torchvision pads when the image is smaller than the crop; after the resize that can only happen
    # for a long side that truncates below `size`, which needs short == long and cannot occur.
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size)).convert("RGB")


# ----- video files --------------------------------------------------------------------------------
def _open(path: str):
    import av

    try:
        return av.open(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot open: corrupt, truncated or not a video ({_reason(e)})") from e


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.replace("\n", " ")[:200]


def _frame_rate(stream) -> float | None:
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    if stream.time_base is not None and float(stream.time_base) > 0:
        return 1.0 / float(stream.time_base)
    return None


def _count_packets(path: str) -> int:
    """Video packets in the file: the frame count when the container does not state it (webm, mkv)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: the file is corrupt or truncated ({_reason(e)})") from e
    finally:
        container.close()


_TRANSPOSE = {90: "ROTATE_90", 180: "ROTATE_180", 270: "ROTATE_270"}  # counter-clockwise, as PIL's


def _upright(image, rotation: int):
    """`image` turned as the display matrix says (counter-clockwise degrees, PyAV's VideoFrame.rotation),
    so that a phone video held upright is not embedded sideways."""
    from PIL import Image

    angle = int(rotation) % 360
    if angle in _TRANSPOSE:
        return image.transpose(getattr(Image.Transpose, _TRANSPOSE[angle]))
    return image.rotate(angle, expand=True) if angle else image


def _decode_selected(path: str, wanted: Sequence[int], size: int) -> tuple[dict[int, np.ndarray], int, dict]:
    """Decode every frame of the first video stream in order; turn each upright; crop and keep only the
    `wanted` ones.

    Returns ({frame number: (size, size, 3) uint8}, number of decoded frames,
             {"end": seconds at which the last decoded frame ends (None if unstamped), "rotation": degrees})."""
    import av

    wanted_set = set(wanted)
    kept: dict[int, np.ndarray] = {}
    container = _open(path)
    n = 0
    end = None
    rotation = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if n == 0:
                rotation = int(frame.rotation or 0)
            if n in wanted_set:
                kept[n] = np.asarray(resize_center_crop(_upright(frame.to_image(), rotation), size))
            if frame.pts is not None and frame.time_base is not None:
                t = float(frame.pts * frame.time_base)
                step = float(frame.duration * frame.time_base) if frame.duration else 0.0
                end = max(end or 0.0, t + step)
            n += 1
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: the file is corrupt or truncated; decoding failed after {n} frames "
                         f"({_reason(e)})") from e
    finally:
        container.close()
    return kept, n, {"end": end, "rotation": rotation}


def _shortfall(info: dict, n: int, end: float | None, fps: float) -> str | None:
    """Why the decoded frames fall short of what the container declares (None when they do not).

    Two frames of slack absorb rounding and B-frame edit lists; beyond that a cut-off file (the index
    or header survived, the data did not) is the likely cause."""
    slack = 2
    declared = info["frame_count"]
    if declared and n < declared - slack:
        return f"decoded {n} of the {declared} frames the container declares"
    duration, start = info["duration"], info.get("start") or 0.0
    if duration and end is not None:
        missing = duration - (end - start)
        if missing > max(slack / fps, 0.02 * duration):
            return f"decoded {end - start:.2f} s of the {duration:.2f} s the container declares"
    return None


def probe_video(path: str | os.PathLike) -> dict:
    """Container facts without decoding: fps (float), frame_count (int, 0 if unstated), duration (s)."""
    path = str(path)
    container = _open(path)
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoError(f"{path}: has no video stream (contains: {', '.join(kinds)}); audio-only or "
                             f"not a video")
        stream = container.streams.video[0]
        fps = _frame_rate(stream)
        if fps is None:
            raise VideoError(f"{path}: the video stream states no frame rate")
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        start = None
        if stream.start_time is not None and stream.time_base is not None:
            start = float(stream.start_time * stream.time_base)
        return {"fps": fps, "frame_count": int(stream.frames or 0), "duration": duration, "start": start,
                "width": stream.codec_context.width, "height": stream.codec_context.height}
    finally:
        container.close()


def load_video_file(path: str | os.PathLike, size: int = 224, max_frames: int = 12,
                    strict: bool = False) -> SampledVideo:
    """Decode and sample one video file as the reference does (see the module docstring).

    A file that decodes to fewer frames than its container declares (cut off during a copy or download)
    is sampled from what decodes, with `truncated` set, the reason in `warnings` and a Python warning
    (VideoTruncatedWarning); with `strict` it is refused (VideoError)."""
    path = str(path)
    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    info = probe_video(path)
    fps = info["fps"]
    predicted = info["frame_count"] or _count_packets(path)
    wanted = reference_indices(predicted, fps, max_frames)
    kept, n, seen = _decode_selected(path, wanted, size)
    if n == 0:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video stream)")
    short = _shortfall(info, n, seen["end"], fps)
    if short and strict:
        raise VideoError(f"{path}: the file is truncated ({short}); re-copy or re-download it, or encode "
                         f"without --strict to embed the part that decodes")
    actual = reference_indices(n, fps, max_frames)
    if actual != wanted:  # the container's frame count was wrong: decode again with the right selection
        kept, n2, _ = _decode_selected(path, actual, size)
        if n2 != n:
            raise VideoError(f"{path}: decoding is not repeatable ({n} then {n2} frames); corrupt file?")
    notes = []
    if short:
        notes.append(f"truncated: {short}; embedded from the frames that decode")
        warnings.warn(f"{path}: {notes[-1]}", VideoTruncatedWarning, stacklevel=2)
    # The duration is what was decoded when the file is cut short: the container's figure is not there.
    if short and seen["end"] is not None:
        duration = seen["end"] - (info.get("start") or 0.0)
    else:
        duration = info["duration"] if info["duration"] else n / fps
    width, height = info["width"], info["height"]
    if seen["rotation"] % 180:
        width, height = height, width
    return SampledVideo(source=path, frames=np.stack([kept[i] for i in actual]), indices=actual,
                        frame_count=n, fps=fps, duration=duration, kind="file",
                        extra={"width": width, "height": height, "rotation": seen["rotation"]},
                        truncated=bool(short), warnings=notes)


# ----- frame folders and arrays ----------------------------------------------------------------------
def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frame_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, in natural order (frame_2 before frame_10)."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: _natural_key(p.name))


def load_frame_folder(folder: str | os.PathLike, size: int = 224, max_frames: int = 12,
                      fps: float | None = None) -> SampledVideo:
    """A folder of frame images (natural order). Without `fps` the images are taken as already sampled
    at one per second (only the linspace step applies); with `fps` they are sampled like a decoded video.
    Only the selected images are opened."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"{folder}: no such folder")
    images = frame_images(folder)
    if not images:
        raise VideoError(f"{folder}: holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
    n = len(images)
    indices = uniform_subsample(n, max_frames) if fps is None else reference_indices(n, fps, max_frames)
    frames = []
    for i in indices:
        try:
            with Image.open(images[i]) as im:
                frames.append(np.asarray(resize_center_crop(im.convert("RGB"), size)))
        except (UnidentifiedImageError, OSError) as e:
            raise VideoError(f"{images[i]}: cannot read frame image ({_reason(e)})") from e
    return SampledVideo(source=str(folder), frames=np.stack(frames), indices=indices,
                        frame_count=n, fps=fps, duration=n / fps if fps else float(n), kind="frames")


def load_array(frames: np.ndarray | torch.Tensor, size: int = 224, max_frames: int = 12,
               fps: float | None = None, name: str = "<array>") -> SampledVideo:
    """In-memory uint8 RGB frames (N, H, W, 3). With `fps` they are treated as every decoded frame and
    sampled at one per second; without, as already sampled (only the linspace step applies)."""
    from PIL import Image

    arr = frames.numpy() if _is_torch_tensor(frames) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise VideoError(f"{name}: frames must be (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise VideoError(f"{name}: frames must be uint8 in [0, 255], got {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise VideoError(f"{name}: frames array is empty, shape {arr.shape}")
    n = arr.shape[0]
    indices = uniform_subsample(n, max_frames) if fps is None else reference_indices(n, fps, max_frames)
    out = np.stack([np.asarray(resize_center_crop(Image.fromarray(np.ascontiguousarray(arr[i])), size))
                    for i in indices])
    return SampledVideo(source=name, frames=out, indices=indices, frame_count=n, fps=fps,
                        duration=n / fps if fps else None, kind="array")


def load_video(source, size: int = 224, max_frames: int = 12, fps: float | None = None,
               strict: bool = False) -> SampledVideo:
    """One entry point: a video file path, a folder of frame images, or a (N, H, W, 3) uint8 array.
    `fps` applies to folders and arrays only (a file states its own rate); `strict` refuses a truncated
    file (see load_video_file)."""
    if isinstance(source, np.ndarray) or _is_torch_tensor(source):
        return load_array(source, size, max_frames, fps)
    if os.path.isdir(source):
        return load_frame_folder(source, size, max_frames, fps)
    return load_video_file(source, size, max_frames, strict)


# ----- finding inputs --------------------------------------------------------------------------------
def find_videos(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Expand command-line arguments into videos: files are taken as given; folders are searched
    recursively for files with a video extension, and a folder holding frame images but no video files
    counts as one frame-folder video. Returns (videos in sorted order, files skipped for their extension).
    A missing path raises FileNotFoundError; links that cannot be followed (loops, dangling) are skipped
    with a warning naming them."""
    videos: list[Path] = []
    ignored: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            videos.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such file or folder")
        for root, dirs, files in os.walk(p):
            dirs.sort()
            root_p = Path(root)
            names = sorted(files, key=_natural_key)
            vids = [root_p / f for f in names if Path(f).suffix.lower() in VIDEO_EXTENSIONS]
            imgs = [f for f in names if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
            if vids:
                videos.extend(vids)
            elif imgs:
                videos.append(root_p)
            ignored.extend(root_p / f for f in names
                           if Path(f).suffix.lower() not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
                           and not f.startswith("."))
    unique: dict[Path, Path] = {}  # resolved path -> the first spelling given
    for v in videos:
        try:
            unique.setdefault(v.resolve(strict=True), v)
        except (OSError, RuntimeError) as e:  # a symlink loop or a dangling link: skip it, go on
            warnings.warn(f"{v}: skipped, cannot follow the link ({getattr(e, 'strerror', None) or e})",
                          UserWarning, stacklevel=2)
    return list(unique.values()), ignored
