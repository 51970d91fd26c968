"""The MUSE model: CLIP towers, pyramid, Mamba head, readout and score.

Data flows one way:
  frames (B, T, 3, H, W) -> CLIP tokens (B, T, 1+g*g, C) -> pyramid levels -> sequence (B, L, C)
  -> Mamba head -> per-frame readout (B, T, C) -> masked pooling -> video embedding (B, C)
  ids (N, max_words) -> CLIP text -> text embedding (N, C);  scores = exp(logit_scale) * t @ v^T
Each arrow is a method that can be called alone. Embeddings are L2-normalised float32.
"""
from __future__ import annotations

import torch
from torch import nn

from . import backend as backends
from .clip import Clip
from .config import MuseConfig
from .mamba import MuseHead
from .pyramid import FeaturePyramid
from .sequence import check_mask, check_tokens, pool_frames, readout

# How reference checkpoint names map onto this module's attributes (and back).
REFERENCE_PREFIXES = {"clip.": "clip.", "MS_mamba.": "head.MS_mamba.", "mamba_stages.": "pyramid.mamba_stages."}


def learn(pyramid: nn.Module, head, tokens: torch.Tensor, mask: torch.Tensor,
          backend: backends.Backend = backends.REFERENCE, stage=None) -> torch.Tensor:
    """The learner, tokens -> embedding, for any head with `forward(seq, backend)` (the Mamba head, or the
    Transformer baseline's): tokens (B, T, 1+g*g, C) in the pyramid's dtype, mask (B, T) of 0/1
    -> (B, C) float32, unit norm. The one place that chains pyramid, head, readout and pooling.
    `stage(name, fn, *args)`, if given, runs each step ("pyramid", "head", "pooling"), e.g. to time it."""
    run = stage or (lambda name, fn, *args: fn(*args))
    seq = run("head", head, run("pyramid", pyramid, tokens, backend), backend)
    return run("pooling", lambda s: pool_frames(readout(s, tokens.shape[1], pyramid.order), mask), seq)


def frame_tokens(visual: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """CLIP visual tokens of every frame: (B, T, 3, S, S) -> (B, T, 1+g*g, C) in the tower's dtype."""
    b, t = frames.shape[:2]
    tokens = visual(frames.reshape(b * t, *frames.shape[2:]))
    return tokens.reshape(b, t, *tokens.shape[1:])


def text_embedding(clip: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """ids (N, max_words) int64 from ClipTokenizer -> (N, C) float32, unit norm."""
    t = clip.encode_text(ids).float()
    return t / t.norm(dim=-1, keepdim=True)


class MuseModel(nn.Module):
    def __init__(self, config: MuseConfig):
        super().__init__()
        self.config = config
        self.clip = Clip(config.vision, config.text)
        self.pyramid = FeaturePyramid(config.head, config.vision)
        self.head = MuseHead(config.head)
        # Set by the weight loaders: which parts hold trained values ("random" until loaded).
        self.weight_sources: dict[str, str] = {"clip": "random", "pyramid": "random", "head": "random"}
        # The backend encode_tokens runs (backend.py); "auto" picks the fastest one for the device.
        self.backend = "auto"

    def set_backend(self, name: str) -> "MuseModel":
        """Choose the backend by name, one of `muse_tvr.engine.backend.names()`."""
        if name not in backends.names():
            raise ValueError(f"backend must be one of {backends.names()}, got {name!r}")
        self.backend = name
        return self

    def resolved_backend(self, device: torch.device | str | None = None) -> backends.Backend:
        """The backend that runs on `device` (default: where the head's parameters are)."""
        return backends.resolve(self.backend, device or self.head.MS_mamba[0].layer_norm1.weight.device)

    # ----- precision -------------------------------------------------------------------------
    def set_precision(self, clip_dtype: torch.dtype = torch.float32,
                      head_dtype: torch.dtype = torch.float32) -> "MuseModel":
        """Cast CLIP and the MUSE head (pyramid + blocks) separately.

        The reference runs CLIP in fp16 and the head in fp32; LayerNorms always compute in fp32 and the
        scan state is always fp32. logit_scale stays fp32.
        """
        for dt in (clip_dtype, head_dtype):
            if dt not in (torch.float32, torch.float16, torch.bfloat16):
                raise ValueError(f"unsupported dtype {dt}; use float32, float16 or bfloat16")
        self.clip.to(clip_dtype)
        self.clip.logit_scale.data = self.clip.logit_scale.data.float()
        self.pyramid.to(head_dtype)
        self.head.to(head_dtype)
        return self

    @property
    def head_dtype(self) -> torch.dtype:
        return self.head.MS_mamba[0].layer_norm1.weight.dtype

    # ----- video ------------------------------------------------------------------------------
    def check_frames(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Validate frames (B, T, 3, S, S) float and mask (B, T); return the mask (all ones if None)."""
        s = self.config.vision.image_size
        if not isinstance(frames, torch.Tensor):
            raise ValueError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
        if frames.dim() != 5 or frames.shape[2] != 3 or frames.shape[3] != s or frames.shape[4] != s:
            raise ValueError(f"frames must have shape (B, T, 3, {s}, {s}), got {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise ValueError(f"frames must be a float tensor of CLIP-normalised pixels, got {frames.dtype}")
        b, t = frames.shape[:2]
        if b == 0 or t == 0:
            raise ValueError(f"frames must hold at least one video and one frame, got {tuple(frames.shape)}")
        return check_mask(mask, b, t, frames.device)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """CLIP visual tokens of every frame: (B, T, 3, S, S) -> (B, T, 1+g*g, C) float32."""
        return frame_tokens(self.clip.visual, frames).float()

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The learner alone: CLIP tokens (B, T, 1+g*g, C) float + mask (B, T) -> (B, C) float32."""
        check_tokens(tokens, self.config.vision.grid, self.config.embed_dim)
        mask = check_mask(mask, tokens.shape[0], tokens.shape[1], tokens.device)
        backend = self.resolved_backend(tokens.device)
        if backend.learner is not None:
            return backend.learner(self, tokens, mask)
        return learn(self.pyramid, self.head, tokens.to(self.head_dtype), mask, backend)

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, 3, S, S) CLIP-normalised float, mask (B, T) of 0/1 -> (B, C) float32, unit norm.

        Padded frames (mask 0) still run through CLIP and the Mamba sequence, as in the reference; the
        mask only applies to the final pooling.
        """
        mask = self.check_frames(frames, mask)
        return self.encode_tokens(self.encode_frames(frames), mask)

    # ----- text -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N, max_words) int64 from ClipTokenizer -> (N, C) float32, unit norm."""
        return text_embedding(self.clip, ids)

    # ----- score ------------------------------------------------------------------------------
    def similarity(self, text_emb: torch.Tensor, video_emb: torch.Tensor) -> torch.Tensor:
        """exp(logit_scale) * t @ v^T: (N_text, C), (N_video, C) -> (N_text, N_video) float32."""
        if text_emb.dim() != 2 or video_emb.dim() != 2 or text_emb.shape[1] != video_emb.shape[1]:
            raise ValueError(f"embeddings must be (N, C) with equal C, got {tuple(text_emb.shape)} "
                             f"and {tuple(video_emb.shape)}")
        scale = self.clip.logit_scale.float().exp()
        return scale * text_emb.float() @ video_emb.float().t()

    # ----- bookkeeping ------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())
        visual = count(self.clip.visual)
        total_clip = count(self.clip)
        return {"clip_visual": visual, "clip_text": total_clip - visual, "pyramid": count(self.pyramid),
                "mamba_head": count(self.head)}
