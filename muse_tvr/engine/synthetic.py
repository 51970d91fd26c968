"""The synthetic-shapes world: clips and captions that anyone can render (issue 17, docs/synthetic-shapes.md).

A clip is square, any side 96-256 px, 2-6 s at 5-30 fps, black background, one filled shape of radius
10-20% of the side: circle, square (half-side = radius) or triangle (apex up, inscribed in the circle of
that radius), whole inside the frame; colour red, green, blue or yellow, each channel within +/-25 of its base RGB; motion left to
right / right to left across the middle band, or up / down, starting and ending within 25% of the edges,
linear in time, with a small random offset perpendicular to the motion. Caption: `a {colour} {shape}
{motion}` (48 combinations). The direction of motion can only be told from the order of the frames.

Everything is deterministic given a seed (`numpy.random.default_rng`). Frames are numpy uint8 (N, S, S, 3)
RGB; `write_video` encodes them with PyAV (H.264, or MPEG-4 where libx264 is missing).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 235), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moves from left to right", "moves from right to left", "moves up", "moves down")
COLOUR_JITTER = 25
SIDE_RANGE = (96, 256)
DURATION_RANGE = (2.0, 6.0)
FPS_RANGE = (5, 30)
RADIUS_RANGE = (0.10, 0.20)  # fraction of the side
EDGE_BAND = 0.25             # start/end centre within this fraction of the side from an edge
OFFSET_RANGE = 0.08          # perpendicular offset of the path from the middle, fraction of the side


def caption(colour: str, shape: str, motion: str) -> str:
    return f"a {colour} {shape} {motion}"


# The 48 captions in a fixed order: colour, then shape, then motion.
CAPTIONS = tuple(caption(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS)
# Motion reversed in time: what a clip played backwards shows.
REVERSED_MOTION = {MOTIONS[0]: MOTIONS[1], MOTIONS[1]: MOTIONS[0], MOTIONS[2]: MOTIONS[3], MOTIONS[3]: MOTIONS[2]}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that fixes one clip. Positions are the shape's centre in pixels, (x, y), y down."""
    colour: str
    shape: str
    motion: str
    side: int
    fps: float
    frames: int
    radius: float
    rgb: tuple[int, int, int]
    start: tuple[float, float]
    end: tuple[float, float]

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.motion)

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def reversed(self) -> "ClipSpec":
        """The same clip played backwards (start and end swapped): its caption's motion is reversed."""
        d = asdict(self)
        d.update(motion=REVERSED_MOTION[self.motion], start=self.end, end=self.start)
        return ClipSpec(**d)


def random_spec(rng: np.random.Generator, colour: str | None = None, shape: str | None = None,
                motion: str | None = None, side: int | None = None, fps: float | None = None,
                duration: float | None = None) -> ClipSpec:
    """A clip drawn uniformly over every range of the world; the named fields are fixed instead."""
    colour = colour or str(rng.choice(list(COLOURS)))
    shape = shape or str(rng.choice(SHAPES))
    motion = motion or str(rng.choice(MOTIONS))
    side = int(side or rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    fps = float(fps or rng.integers(FPS_RANGE[0], FPS_RANGE[1] + 1))
    duration = float(duration or rng.uniform(*DURATION_RANGE))
    frames = max(1, int(round(duration * fps)))
    radius = float(rng.uniform(*RADIUS_RANGE)) * side
    base = np.array(COLOURS[colour])
    rgb = tuple(int(v) for v in np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255))
    # Along the motion: start and end centres within EDGE_BAND of the two edges, the shape whole inside
    # the frame (radius <= 20% < 25% of the side); across it: the middle plus a small offset.
    lo = radius
    a = float(rng.uniform(lo, EDGE_BAND * side))
    b = float(side - rng.uniform(lo, EDGE_BAND * side))
    across = side / 2 + float(rng.uniform(-OFFSET_RANGE, OFFSET_RANGE)) * side
    if motion == MOTIONS[0]:
        start, end = (a, across), (b, across)
    elif motion == MOTIONS[1]:
        start, end = (b, across), (a, across)
    elif motion == MOTIONS[2]:  # up: y decreases
        start, end = (across, b), (across, a)
    else:
        start, end = (across, a), (across, b)
    return ClipSpec(colour, shape, motion, side, fps, frames, radius, rgb, start, end)


def position(spec: ClipSpec, index: int) -> tuple[float, float]:
    """Centre of the shape in frame `index` (linear from start at frame 0 to end at the last frame)."""
    f = index / max(spec.frames - 1, 1)
    return (spec.start[0] + f * (spec.end[0] - spec.start[0]), spec.start[1] + f * (spec.end[1] - spec.start[1]))


def shape_mask(shape: str, side: int, cx: float, cy: float, r: float,
               square_scale: float = 1.0, triangle_height: float = 1.5) -> np.ndarray:
    """Boolean (side, side) mask of the filled shape, sampled at pixel centres.

    square_scale and triangle_height vary the drawing convention (half-side = scale * r; triangle height
    in units of r, 1.5 = equilateral inscribed in the circle); the world uses the defaults."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        h = square_scale * r
        return (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    if shape == "triangle":  # apex up at (cx, top); base at y = top + height, half-width height / sqrt(3)
        top = cy - r
        height = triangle_height * r
        half = height / np.sqrt(3.0)
        rel = (yy - top) / height  # 0 at the apex, 1 at the base
        return (rel >= 0) & (rel <= 1) & (np.abs(xx - cx) <= rel * half)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def render_frames(spec: ClipSpec, indices=None, **style) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB frames of the clip: every frame, or only those at `indices`."""
    indices = range(spec.frames) if indices is None else indices
    out = np.zeros((len(indices), spec.side, spec.side, 3), dtype=np.uint8)
    for k, i in enumerate(indices):
        cx, cy = position(spec, i)
        out[k][shape_mask(spec.shape, spec.side, cx, cy, spec.radius, **style)] = spec.rgb
    return out


def _codec() -> str:
    import av
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str | None = None) -> Path:
    """Encode uint8 (N, H, W, 3) RGB frames to `path` with PyAV at `fps` (H.264 yuv444p, visually lossless
    at crf 10; MPEG-4 when libx264 is not built in). Odd sides are fine with yuv444p."""
    import av

    path = Path(path)
    codec = codec or _codec()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        if codec == "libx264":
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": "10", "preset": "veryfast"}
        else:
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = 4_000_000
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clip(path: str | os.PathLike, spec: ClipSpec) -> Path:
    return write_video(path, render_frames(spec), spec.fps)


def clip_set(seed: int, per_caption: int = 1) -> list[ClipSpec]:
    """`per_caption` random clips of each of the 48 captions, in CAPTIONS order, from one seed."""
    rng = np.random.default_rng(seed)
    specs = []
    for cap in CAPTIONS:
        colour, shape, motion = _parse(cap)
        specs += [random_spec(rng, colour, shape, motion) for _ in range(per_caption)]
    return specs


def write_clip_set(directory: str | os.PathLike, seed: int, per_caption: int = 1) -> list[tuple[Path, ClipSpec]]:
    """Render `clip_set(seed, per_caption)` to DIR/clip_000.mp4 ...; returns (path, spec) pairs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [(write_clip(directory / f"clip_{i:03d}.mp4", s), s) for i, s in enumerate(clip_set(seed, per_caption))]


def _parse(cap: str) -> tuple[str, str, str]:
    words = cap.split(" ", 3)
    if len(words) != 4 or words[0] != "a" or cap not in CAPTIONS:
        raise ValueError(f"{cap!r} is not a caption of the synthetic-shapes world")
    return words[1], words[2], words[3]
