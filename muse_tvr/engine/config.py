"""Hyper-parameters of a MUSE model: one frozen dataclass per part, presets per CLIP backbone.

The numbers follow OpenAI CLIP and the MUSE reference code (see docs/model.md sections 2-5).
Everything the engine builds is derived from a `MuseConfig`; nothing else carries sizes.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..kernels.pyramid import LAYER_NORM_EPS, SEQUENCE_ORDERS, scale_grid, sequence_length
from ..kernels.pyramid.reference import STAGE_LAYOUT

SUPPORTED_SCALES = tuple(sorted(STAGE_LAYOUT))

# CLIP's image normalisation (docs/model.md section 1).
# defined beside the normalisation that uses them, which must import without torch (Triton clients)
from .preprocess import CLIP_MEAN, CLIP_STD  # noqa: E402,F401


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    output_dim: int = 512

    @property
    def grid(self) -> int:
        """Patches per side of the token map (7 for ViT-B/32 at 224)."""
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        """Tokens per frame: CLS + grid * grid."""
        return 1 + self.grid * self.grid


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77  # rows of the positional table in the checkpoint
    width: int = 512
    layers: int = 12
    heads: int = 8
    output_dim: int = 512


@dataclass(frozen=True)
class HeadConfig:
    """The multi-scale Mamba learner: pyramid + bidirectional Mamba blocks."""

    d_model: int = 512
    depth: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 1
    dt_rank: int = 0  # 0 means ceil(d_model / 16), as in mamba-ssm
    scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    order: str = "scale_wise"
    layer_norm_eps: float = LAYER_NORM_EPS

    def __post_init__(self) -> None:
        if self.order not in SEQUENCE_ORDERS:
            raise ValueError(f"sequence order {self.order!r} is not one of {SEQUENCE_ORDERS}")
        bad = [s for s in self.scales if s not in SUPPORTED_SCALES]
        if bad:
            raise ValueError(f"pyramid scales {bad} are not supported; choose from {SUPPORTED_SCALES}")
        if self.d_model % 4 != 0:
            raise ValueError(f"d_model {self.d_model} must be divisible by 4 (the 4.0 scale halves it twice)")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)


@dataclass(frozen=True)
class MuseConfig:
    name: str = "ViT-B/32"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    max_frames: int = 12
    max_words: int = 32

    def __post_init__(self) -> None:
        if self.head.d_model != self.vision.output_dim or self.head.d_model != self.text.output_dim:
            raise ValueError(
                f"head width {self.head.d_model} must equal the CLIP joint dimension "
                f"(vision {self.vision.output_dim}, text {self.text.output_dim})")
        if self.max_words > self.text.context_length:
            raise ValueError(f"max_words {self.max_words} exceeds the text context {self.text.context_length}")

    @property
    def embed_dim(self) -> int:
        return self.head.d_model

    def level_tokens(self) -> list[int]:
        """Tokens per frame for each pyramid level, in the order of `head.scales`."""
        return [scale_grid(self.vision.grid, s) ** 2 for s in self.head.scales]

    def sequence_length(self, frames: int | None = None) -> int:
        """Length of the sequence the Mamba blocks see for `frames` frames (default max_frames)."""
        t = self.max_frames if frames is None else frames
        return sequence_length(t, self.vision.grid, self.head.scales, self.head.order)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MuseConfig":
        try:
            head = dict(d["head"])
            head["scales"] = tuple(head["scales"])
            return cls(name=d["name"], vision=VisionConfig(**d["vision"]), text=TextConfig(**d["text"]),
                       head=HeadConfig(**head), max_frames=d["max_frames"], max_words=d["max_words"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"invalid MUSE config: {e}") from e

    def replace(self, **changes: Any) -> "MuseConfig":
        return dataclasses.replace(self, **changes)


VIT_B_32 = MuseConfig()
VIT_B_16 = MuseConfig(name="ViT-B/16", vision=VisionConfig(patch_size=16))
VIT_L_14 = MuseConfig(
    name="ViT-L/14",
    vision=VisionConfig(patch_size=14, width=1024, layers=24, heads=16, output_dim=768),
    text=TextConfig(width=768, layers=12, heads=12, output_dim=768),
    head=HeadConfig(d_model=768),
)
# A few-layer, narrow model with the real token geometry (7x7 grid): for tests and quick demos only.
TINY = MuseConfig(
    name="tiny",
    # One 64-wide attention head per layer: OpenAI's width // 64 convention, so the architecture can be
    # read back from a checkpoint's shapes.
    vision=VisionConfig(width=64, layers=2, heads=1, output_dim=64),
    text=TextConfig(width=64, layers=2, heads=1, output_dim=64),
    head=HeadConfig(d_model=64, depth=2),
    max_frames=4,
)

PRESETS = {"ViT-B/32": VIT_B_32, "ViT-B/16": VIT_B_16, "ViT-L/14": VIT_L_14, "tiny": TINY}


def get_config(name: str) -> MuseConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}") from None
