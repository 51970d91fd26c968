"""Decoding, reference sampling and preprocessing on clips generated here with PyAV.

Each generated frame carries its own frame number as a 12-bit pattern of 8x8 black/white blocks, so a test
can check WHICH frame the decoder delivered, not only how many. `make_clip` is also used by the gallery
and retrieval tests.
"""
from __future__ import annotations

import fractions
import tracemalloc

import av
import numpy as np
import pytest
import torch
from PIL import Image

from muse_tvr.engine.preprocess import normalize, pad_frames
from muse_tvr.engine.video import (VideoError, find_videos, load_array, load_frame_folder, load_video,
                                   load_video_file, probe_video, reference_indices, resize_center_crop,
                                   uniform_subsample)

NTSC = fractions.Fraction(30000, 1001)  # 29.97 fps


# ----- clip generation --------------------------------------------------------------------------------
def pattern_frame(i: int, w: int = 64, h: int = 48, seed: int = 0) -> np.ndarray:
    """RGB frame whose top two rows of 8x8 blocks spell i in binary (white = 1); a tint below varies
    with `seed` so that different clips have different content."""
    img = np.zeros((h, w, 3), np.uint8)
    img[16:] = ((seed * 53) % 200 + 20, (seed * 97 + i) % 200 + 20, (i * 7) % 200 + 20)
    for b in range(12):
        r, c = divmod(b, 8)
        if (i >> b) & 1:
            img[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 255
    return img


def frame_number(img: np.ndarray) -> int:
    """Inverse of `pattern_frame` on a decoded (lossy) frame."""
    n = 0
    for b in range(12):
        r, c = divmod(b, 8)
        if img[r * 8 + 2:r * 8 + 6, c * 8 + 2:c * 8 + 6].mean() > 128:
            n |= 1 << b
    return n


def make_clip(path, seconds: float, fps=25, size=(64, 48), codec: str = "libx264", vfr: bool = False,
              seed: int = 0) -> int:
    """Write a clip of round(seconds * fps) pattern frames; returns the frame count. With `vfr`, frame
    durations alternate between 20 ms and 70 ms (a variable-frame-rate mp4)."""
    rate = fps if isinstance(fps, fractions.Fraction) else fractions.Fraction(fps).limit_denominator(1001)
    n = int(round(seconds * float(rate)))
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "12", "preset": "ultrafast"}
        if vfr:
            s.codec_context.time_base = fractions.Fraction(1, 1000)
        t = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern_frame(i, w, h, seed), format="rgb24")
            if vfr:
                f.pts, f.time_base = t, fractions.Fraction(1, 1000)
                t += 70 if i % 3 == 0 else 20
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return n


def make_audio_only(path) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for _ in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate = 16000
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def all_frames(path) -> list[Image.Image]:
    with av.open(str(path)) as c:
        return [f.to_image() for f in c.decode(c.streams.video[0])]


def torchvision_crop(img: Image.Image, size: int = 224) -> np.ndarray:
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize
    t = Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size),
                 lambda im: im.convert("RGB")])
    return np.asarray(t(img))


# ----- the sampling formula -------------------------------------------------------------------------
def reference_loop(frame_count: int, fps: float, max_frames: int) -> list[int]:
    """The reference loader's control flow re-enacted on frame numbers: seconds 0..ceil(N/fps) at
    int(fps) frames per second, stopping at the first frame past the end, then linspace."""
    step = int(fps)
    total_sec = (frame_count + step - 1) // step
    picked = []
    for sec in np.arange(0, total_sec + 1):
        idx = int(sec * step)
        if idx >= frame_count:  # cap.read() fails past the end and the loop breaks
            break
        picked.append(idx)
    if len(picked) > max_frames:
        picked = [picked[i] for i in np.linspace(0, len(picked) - 1, num=max_frames, dtype=int)]
    return picked


@pytest.mark.parametrize("fps", [25, 30, float(NTSC)], ids=["25fps", "30fps", "29.97fps"])
@pytest.mark.parametrize("seconds", [0.4, 3, 13, 100], ids=["0.4s", "3s", "13s", "100s"])
def test_reference_indices_match_reference_loop(seconds, fps):
    n = int(round(seconds * fps))
    for max_frames in (12, 4, 1):
        assert reference_indices(n, fps, max_frames) == reference_loop(n, fps, max_frames)


def test_reference_indices_known_values():
    assert reference_indices(10, 25, 12) == [0]  # 0.4 s: only frame 0
    assert reference_indices(90, float(NTSC), 12) == [0, 29, 58, 87]  # 29.97 truncates to 29
    # 13 s at 30 fps: 13 one-per-second frames; linspace(0, 12, 12) floors to 0..10 and 12, dropping 11
    assert reference_indices(390, 30, 12) == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360]
    assert reference_indices(2500, 25, 12) == [int(i) * 25 for i in np.linspace(0, 99, 12, dtype=int)]
    assert reference_indices(0, 25, 12) == []
    assert reference_indices(5, 0.5, 12) == [0, 1, 2, 3, 4]  # below 1 fps: every frame (reference: /0)
    assert uniform_subsample(3, 12) == [0, 1, 2]
    with pytest.raises(ValueError):
        reference_indices(10, 0, 12)


# ----- decoding generated clips -----------------------------------------------------------------------
CLIPS = [  # (seconds, fps, container/codec, frame size): the 100 s clip is small so the test stays fast
    (0.4, 25, "mp4", (64, 48)),
    (3, NTSC, "mp4", (64, 48)),
    (3, 30, "webm", (48, 64)),
    (13, 30, "mkv", (64, 48)),
    (13, NTSC, "mov", (64, 48)),
    (100, 25, "mp4", (32, 24)),
]
CODEC = {"mp4": "libx264", "mkv": "libx264", "mov": "libx264", "webm": "libvpx-vp9", "avi": "mpeg4"}


@pytest.mark.parametrize("seconds,fps,ext,size", CLIPS,
                         ids=[f"{s}s-{float(f):.2f}fps-{e}" for s, f, e, _ in CLIPS])
def test_decoded_clip_sampling_and_pixels(tmp_path, seconds, fps, ext, size):
    path = tmp_path / f"clip.{ext}"
    n = make_clip(path, seconds, fps, size=size, codec=CODEC[ext])
    v = load_video_file(path, size=224, max_frames=12)
    assert v.frame_count == n
    assert v.fps == pytest.approx(float(fps))
    assert v.indices == reference_loop(n, float(fps), 12)
    assert v.frames.shape == (len(v.indices), 224, 224, 3) and v.frames.dtype == np.uint8
    assert v.duration == pytest.approx(seconds, abs=0.1)
    raw = all_frames(path)
    assert len(raw) == n
    for j, idx in enumerate(v.indices):
        if size[0] >= 64:  # the 12-bit pattern needs 64 px; the tiny 100 s clip checks pixels only
            assert frame_number(np.asarray(raw[idx])) == idx  # the decoder's numbering is the source's
        assert np.array_equal(v.frames[j], torchvision_crop(raw[idx])), f"frame {idx} differs"


def test_avi_mpeg4_clip(tmp_path):
    path = tmp_path / "clip.avi"
    n = make_clip(path, 2, 25, codec="mpeg4")
    v = load_video(str(path), size=224, max_frames=12)
    assert v.indices == [0, 25] and v.frame_count == n


def test_variable_frame_rate(tmp_path):
    path = tmp_path / "vfr.mp4"
    n = make_clip(path, 6, 25, vfr=True)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        guessed, average = float(s.guessed_rate), float(s.average_rate)
    assert guessed != pytest.approx(average)  # it really is variable
    v = load_video_file(path, max_frames=12)
    # frame numbers count decoded frames (OpenCV's frame position), at the rate FFmpeg guesses
    assert v.fps == pytest.approx(guessed)
    assert v.frame_count == n
    assert v.indices == reference_indices(n, guessed, 12)
    raw = all_frames(path)
    assert [frame_number(np.asarray(raw[i])) for i in v.indices] == v.indices


def test_frame_count_missing_from_container(tmp_path):
    """webm states no frame count: packets are counted first; the selection is still exact."""
    path = tmp_path / "long.webm"
    n = make_clip(path, 20, 10, codec="libvpx-vp9")
    assert probe_video(path)["frame_count"] == 0
    v = load_video_file(path, max_frames=5)
    assert v.indices == reference_indices(n, 10, 5) == [0, 40, 90, 140, 190]


def test_long_video_not_held_in_memory(tmp_path):
    path = tmp_path / "long.mp4"
    n = make_clip(path, 100, 25, size=(64, 48))
    tracemalloc.start()
    v = load_video_file(path, max_frames=12)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole = n * 224 * 224 * 3  # all frames at model size
    assert len(v.indices) == 12
    assert peak < 12 * 224 * 224 * 3 * 4, f"peak {peak / 1e6:.1f} MB; the whole video would be {whole / 1e6:.0f} MB"


# ----- bad inputs --------------------------------------------------------------------------------------
def test_bad_files_name_the_file(tmp_path):
    good = tmp_path / "good.mp4"
    make_clip(good, 2, 25)
    data = good.read_bytes()
    cases = {
        "empty.mp4": b"",
        "garbage.mp4": bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        "truncated.mp4": data[: len(data) // 3],
        "text.avi": b"this is not a video\n" * 20,
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(VideoError, match=name.replace(".", r"\.")):
            load_video_file(p)
    audio = tmp_path / "audio_only.mp4"
    make_audio_only(audio)
    with pytest.raises(VideoError, match="audio_only.mp4: has no video stream"):
        load_video_file(audio)
    with pytest.raises(VideoError, match="missing.mp4: no such file"):
        load_video_file(tmp_path / "missing.mp4")


# ----- preprocessing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("wh", [(64, 48), (48, 64), (320, 240), (225, 400), (401, 224), (224, 224),
                                (300, 300), (1000, 227), (100, 37)])
def test_resize_center_crop_equals_torchvision(wh):
    rng = np.random.default_rng(sum(wh))
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    ours = np.asarray(resize_center_crop(img, 224))
    assert ours.shape == (224, 224, 3)
    assert np.array_equal(ours, torchvision_crop(img))
    assert np.array_equal(np.asarray(resize_center_crop(img.convert("L"), 224)),
                          torchvision_crop(img.convert("L")))


def test_model_input_is_normalised_and_zero_padded(tmp_path):
    path = tmp_path / "c.mp4"
    make_clip(path, 3, 25)
    v = load_video_file(path, max_frames=12)
    frames, mask = v.model_input(12)
    assert frames.shape == (12, 3, 224, 224) and frames.dtype == torch.float32
    assert mask.tolist() == [1.0] * 3 + [0.0] * 9
    assert torch.equal(frames[:3], normalize(v.frames))
    assert torch.count_nonzero(frames[3:]) == 0
    # same as the reference's ToTensor + Normalize on the torchvision-cropped image
    from torchvision.transforms import Normalize, ToTensor
    from muse_tvr.engine.config import CLIP_MEAN, CLIP_STD
    ref = Normalize(CLIP_MEAN, CLIP_STD)(ToTensor()(Image.fromarray(v.frames[1])))
    assert torch.allclose(frames[1], ref, atol=1e-6)


# ----- frame folders and arrays ---------------------------------------------------------------------------
def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(15):
        Image.fromarray(pattern_frame(i)).save(folder / f"frame_{i}.png")
    (folder / "notes.txt").write_text("ignored")
    v = load_frame_folder(folder, max_frames=12)
    assert v.indices == uniform_subsample(15, 12) and v.frame_count == 15
    # natural order: frame_10 comes after frame_9, and each kept image is the right one
    for j, i in enumerate(v.indices):
        assert np.array_equal(v.frames[j], torchvision_crop(Image.fromarray(pattern_frame(i))))
    v2 = load_frame_folder(folder, max_frames=12, fps=5)  # as raw frames at 5 fps
    assert v2.indices == [0, 5, 10]
    (folder / "frame_3.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match="frame_3.png"):
        load_frame_folder(folder, max_frames=15)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="no frame images"):
        load_frame_folder(empty)


def test_array_input():
    arr = np.stack([pattern_frame(i) for i in range(60)])
    v = load_array(arr, max_frames=12, fps=25)
    assert v.indices == [0, 25, 50]
    assert np.array_equal(v.frames[1], torchvision_crop(Image.fromarray(arr[25])))
    v = load_video(torch.from_numpy(arr), max_frames=4)
    assert v.indices == [0, 19, 39, 59]
    with pytest.raises(VideoError, match="uint8"):
        load_array(arr.astype(np.float32))
    with pytest.raises(VideoError, match=r"\(N, H, W, 3\)"):
        load_array(arr[..., :2])
    frames, mask = pad_frames(normalize(v.frames), 6)
    assert frames.shape == (6, 3, 224, 224) and mask.sum() == 4


def test_find_videos_mixed_folder(tmp_path):
    make_clip(tmp_path / "b.mp4", 1, 25)
    make_clip(tmp_path / "a.webm", 1, 25, codec="libvpx-vp9")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "broken.mkv").write_bytes(b"junk")
    frames = tmp_path / "sub" / "shot1"
    frames.mkdir(parents=True)
    Image.fromarray(pattern_frame(0)).save(frames / "0001.jpg")
    videos, ignored = find_videos([tmp_path, tmp_path / "b.mp4"])
    assert [p.name for p in videos] == ["a.webm", "b.mp4", "broken.mkv", "shot1"]
    assert [p.name for p in ignored] == ["readme.txt"]
    with pytest.raises(FileNotFoundError, match="nope"):
        find_videos([tmp_path / "nope"])


# ----- truncated files and rotation metadata ----------------------------------------------------------
def _write(path, n: int, fps: int = 10, size=(64, 48), rotation: int = 0, options=None, image=None) -> None:
    w, h = size
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "12", "preset": "ultrafast"}
        if rotation:
            s.set_display_rotation(rotation)
        for i in range(n):
            img = pattern_frame(i, w, h) if image is None else image
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _cut_in_half(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("ext,options", [(".mp4", {"movflags": "faststart"}), (".mkv", None)],
                         ids=["faststart-mp4", "mkv"])
def test_truncated_file_is_flagged(tmp_path, ext, options):
    path = tmp_path / f"cut{ext}"
    _write(path, 60, options=options)
    whole = load_video_file(path, size=32)
    assert not whole.truncated and whole.warnings == []
    _cut_in_half(path)
    with pytest.warns(UserWarning, match="truncated"):
        v = load_video_file(path, size=32)
    assert v.truncated
    assert v.frame_count < 60
    assert v.duration < 6.0 - 1.0  # the decoded part, not the container's 6 s
    assert "truncated" in v.warnings[0]
    with pytest.raises(VideoError, match="truncated"):
        load_video(str(path), size=32, strict=True)


def test_complete_vfr_clip_is_not_flagged(tmp_path):
    path = tmp_path / "vfr.mp4"
    make_clip(path, 3, vfr=True)
    import warnings as w
    with w.catch_warnings():
        w.simplefilter("error")
        assert not load_video_file(path, size=32).truncated


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:24] = 255  # top half white: any turn moves it
    path = tmp_path / f"rot{rotation}.mp4"
    _write(path, 3, size=(64, 48), rotation=rotation, image=stored)
    v = load_video_file(path, size=48)
    assert v.extra["rotation"] % 360 == rotation % 360
    # the display matrix turns counter-clockwise, as np.rot90 does
    upright = np.ascontiguousarray(np.rot90(stored, k=(rotation % 360) // 90))
    assert (v.extra["width"], v.extra["height"]) == (upright.shape[1], upright.shape[0])
    want = np.asarray(resize_center_crop(Image.fromarray(upright), 48)).astype(int)
    sideways = np.asarray(resize_center_crop(Image.fromarray(stored), 48)).astype(int)
    assert np.abs(v.frames[0].astype(int) - want).mean() < 12
    assert np.abs(sideways - want).mean() > 60  # the check can tell an unturned frame
