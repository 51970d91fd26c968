"""The Transformer baseline for the MUSE claim check: the same multi-scale learner with attention blocks.

Everything except the blocks is MUSE's: the same CLIP tokens, the same `FeaturePyramid`, the same
scale-wise sequence (no positional embedding, as in MUSE), the same readout (positions 0..T-1) and masked
pooling. Only the sequence mixer changes: pre-LN Transformer blocks of width d (512), 8 heads, GELU MLP,
NON-causal attention through `torch.nn.functional.scaled_dot_product_attention`, no final norm (MUSE's
head has none either).

Two variants (see docs/benchmarks.md):
- depth-matched: 4 blocks, MLP x4 (hidden 2048): 12,609,536 parameters at d = 512 (12 d^2 + biases + LN).
- parameter-matched to the MUSE head (4,687,872): 2 blocks with the MLP hidden width solved so the count
  is as close as possible (hidden 1259, 4,687,318 parameters, -0.01%). Halving the depth keeps each block a
  normal Transformer block; the alternative (4 blocks with a 116-wide MLP) would be a degenerate model.

Mask semantics follow MUSE exactly: padded frames go through the sequence (no key-padding mask, since
the MUSE reference scans padded frames too) and the mask applies only to the final pooling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MuseConfig
from .model import learn
from .pyramid import FeaturePyramid
from .sequence import check_mask, check_tokens

MUSE_HEAD_PARAMS_B32 = 4_687_872  # docs/model.md section 8; tests check it against MuseHead


@dataclass(frozen=True)
class TransformerHeadConfig:
    d_model: int = 512
    depth: int = 4
    heads: int = 8
    mlp_hidden: int = 2048
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.heads != 0:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")
        if self.depth < 1 or self.mlp_hidden < 1:
            raise ValueError(f"depth and mlp_hidden must be >= 1, got {self.depth}, {self.mlp_hidden}")

    def parameter_count(self) -> int:
        """Closed form of the module's parameter count (checked against the module in the tests)."""
        d, h = self.d_model, self.mlp_hidden
        attn = 3 * d * d + 3 * d + d * d + d
        mlp = d * h + h + h * d + d
        norms = 2 * 2 * d
        return self.depth * (attn + mlp + norms)


def depth_matched(d_model: int = 512, depth: int = 4) -> TransformerHeadConfig:
    """Same depth as the MUSE head, standard MLP x4."""
    return TransformerHeadConfig(d_model=d_model, depth=depth, mlp_hidden=4 * d_model)


def parameter_matched(target: int, d_model: int = 512, depth: int = 2) -> TransformerHeadConfig:
    """`depth` blocks whose MLP hidden width makes the count closest to `target` parameters."""
    base = TransformerHeadConfig(d_model=d_model, depth=depth, mlp_hidden=1)
    per_hidden = depth * (2 * d_model + 1)  # each hidden unit: a row of W1, its bias, a column of W2
    fixed = base.parameter_count() - per_hidden
    hidden = round((target - fixed) / per_hidden)
    if hidden < 1:
        raise ValueError(f"{depth} blocks of width {d_model} already exceed {target:,} parameters")
    return TransformerHeadConfig(d_model=d_model, depth=depth, mlp_hidden=hidden)


# ----- modules ------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Non-causal multi-head self-attention: (B, L, d) -> (B, L, d)."""

    def __init__(self, cfg: TransformerHeadConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # (B, H, L, d_head)
        return self.proj(y.transpose(1, 2).reshape(b, length, d))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attn(ln1(x)), then x + mlp(ln2(x)). GELU (exact erf), as in CLIP-free ViTs."""

    def __init__(self, cfg: TransformerHeadConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_hidden), nn.GELU(),
                                 nn.Linear(cfg.mlp_hidden, cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerHead(nn.Module):
    """forward(seq (B, L, d) float) -> (B, L, d): the blocks only, no final norm."""

    def __init__(self, cfg: TransformerHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.depth))

    def forward(self, seq: torch.Tensor, backend=None) -> torch.Tensor:
        """`backend` is accepted for the learner's head interface; attention has no custom kernels."""
        if seq.dim() != 3 or seq.shape[-1] != self.cfg.d_model:
            raise ValueError(f"seq must be (B, L, {self.cfg.d_model}), got {tuple(seq.shape)}")
        for blk in self.blocks:
            seq = blk(seq)
        return seq


class TransformerLearner(nn.Module):
    """MUSE's multi-scale learner with the Mamba blocks replaced by `TransformerHead`.

    encode_tokens(tokens (B, T, 1+g*g, C) float, mask (B, T) of 0/1 or None) -> (B, C) float32 unit norm,
    the same contract as `MuseModel.encode_tokens`.
    """

    def __init__(self, config: MuseConfig, head: TransformerHeadConfig | None = None):
        super().__init__()
        self.config = config
        head = head or depth_matched(config.head.d_model, config.head.depth)
        if head.d_model != config.head.d_model:
            raise ValueError(f"Transformer width {head.d_model} must equal the token width {config.head.d_model}")
        self.pyramid = FeaturePyramid(config.head, config.vision)
        self.head = TransformerHead(head)

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tokens(tokens, self.config.vision.grid, self.config.embed_dim)
        mask = check_mask(mask, tokens.shape[0], tokens.shape[1], tokens.device)
        return learn(self.pyramid, self.head, tokens, mask)

    def parameter_counts(self) -> dict[str, int]:
        return {"pyramid": sum(p.numel() for p in self.pyramid.parameters()),
                "transformer_head": sum(p.numel() for p in self.head.parameters())}
