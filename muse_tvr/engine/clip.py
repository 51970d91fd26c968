"""The CLIP towers MUSE runs on (docs/model.md section 2), with OpenAI CLIP's state-dict layout.

`Clip(vision, text)` loads an OpenAI CLIP state dict (or the `clip.`-prefixed part of a MUSE checkpoint,
prefix stripped) with `load_state_dict(..., strict=True)`:

    visual.{conv1.weight, class_embedding, positional_embedding, ln_pre.*, transformer.resblocks.*,
            ln_post.*, proj}
    token_embedding.weight, positional_embedding, transformer.resblocks.*, ln_final.*, text_projection,
    logit_scale

Precision: the compute dtype is the dtype of the towers' matmul weights (`conv1.weight` for vision,
`text_projection` for text), so `model.half()` and `to_reference_precision()` both run in fp16; inputs and
embeddings are cast to it, LayerNorm always computes in fp32, and outputs come back as float32, as in the
reference. Attention is written out with `scaled_dot_product_attention` rather than `nn.MultiheadAttention`
so the graph exports to ONNX as plain matmuls.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig, VisionConfig


def _exporting() -> bool:
    """True while tracing/compiling, where checks that read tensor values cannot run."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm that normalises in float32 whatever the input and weight dtypes, then casts back.

    fp16 variance over 768 channels loses too much; the reference keeps LayerNorm in fp32 for that reason.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI CLIP was trained with (x * sigmoid(1.702 x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention holding its weights under `nn.MultiheadAttention`'s names.

    Keeping `in_proj_weight` (3*width, width) packed as q|k|v and `out_proj` as a Linear lets CLIP
    checkpoints load unchanged.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (N, L, 3, H, Dh) -> 3 x (N, H, L, Dh)
        q, k, v = qkv.reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with a 4x QuickGELU MLP."""

    def __init__(self, width: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.ln_1 = LayerNormFp32(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNormFp32(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), self.causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of blocks on batch-first (N, L, width) activations."""

    def __init__(self, width: int, layers: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, causal) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)

    @torch.no_grad()
    def init_parameters(self) -> None:
        # OpenAI CLIP's scheme: residual-branch outputs shrink with depth so the stream's variance stays
        # bounded in random models.
        attn_std = self.width ** -0.5
        proj_std = self.width ** -0.5 * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


# Weights the reference keeps in fp16 (OpenAI CLIP's convert_weights: conv, linear, attention, projections);
# embeddings and LayerNorms stay fp32 there.
def _reference_fp16_params(module: nn.Module) -> list[nn.Parameter]:
    params = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            params += [p for p in (m.weight, m.bias) if p is not None]
        elif isinstance(m, SelfAttention):
            params += [m.in_proj_weight, m.in_proj_bias]
        elif isinstance(m, ClipVisual):
            params.append(m.proj)
        elif isinstance(m, Clip):
            params.append(m.text_projection)
    return params


def _check_images(images: torch.Tensor, cfg: VisionConfig) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be 4-D (N, 3, {cfg.image_size}, {cfg.image_size}), "
                         f"got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels in dim 1, got {images.shape[1]} "
                         f"(shape {tuple(images.shape)})")
    if images.shape[2] != cfg.image_size or images.shape[3] != cfg.image_size:
        raise ValueError(f"images must be {cfg.image_size}x{cfg.image_size}, got "
                         f"{images.shape[2]}x{images.shape[3]} (shape {tuple(images.shape)})")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor of normalised pixels, got {images.dtype}")


def _check_ids(ids: torch.Tensor, cfg: TextConfig) -> None:
    if not isinstance(ids, torch.Tensor):
        raise ValueError(f"token ids must be a torch.Tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"token ids must be an integer tensor (int64), got {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"token ids must be 2-D (N, L), got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0 or ids.shape[1] > cfg.context_length:
        raise ValueError(f"token ids have length {ids.shape[1]}; it must be in [1, {cfg.context_length}] "
                         "(the text context length)")
    if ids.numel() and not _exporting():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {cfg.vocab_size})")


class ClipVisual(nn.Module):
    """CLIP's vision transformer, returning every token in the joint space.

    forward(images: float (N, 3, S, S), normalised pixels, S = image_size) ->
        float32 (N, 1 + grid*grid, output_dim): ln_post then @ proj on all tokens; token 0 is CLS, then the
        patch grid in row-major (h, w) order.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size != 0:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.cfg = cfg
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.tokens, w))
        self.ln_pre = LayerNormFp32(w)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, causal=False)
        self.ln_post = LayerNormFp32(w)
        self.proj = nn.Parameter(torch.empty(w, cfg.output_dim))
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        scale = self.cfg.width ** -0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)
        self.transformer.init_parameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, self.cfg)
        dtype = self.conv1.weight.dtype
        x = self.conv1(images.to(dtype))  # (N, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (N, grid*grid, width), row-major patches
        cls = self.class_embedding.to(dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x) @ self.proj.to(dtype)
        return x.float()


class Clip(nn.Module):
    """Both CLIP towers under OpenAI CLIP's state-dict keys (the text tower's parts at the top level).

    encode_image(images float (N, 3, S, S)) -> float32 (N, 1 + grid*grid, output_dim), all tokens.
    encode_text(ids int (N, L)) -> float32 (N, output_dim).
    forward(images, ids) -> (encode_image(images), encode_text(ids)).
    """

    def __init__(self, vision: VisionConfig, text: TextConfig) -> None:
        super().__init__()
        if vision.output_dim != text.output_dim:
            raise ValueError(f"vision output_dim {vision.output_dim} differs from text output_dim "
                             f"{text.output_dim}; CLIP needs one joint space")
        self.visual = ClipVisual(vision)
        self.text_cfg = text
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.transformer = Transformer(text.width, text.layers, text.heads, causal=True)
        self.ln_final = LayerNormFp32(text.width)
        self.text_projection = nn.Parameter(torch.empty(text.width, text.output_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        with torch.no_grad():
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)
            nn.init.normal_(self.text_projection, std=text.width ** -0.5)
            self.transformer.init_parameters()

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: integer (N, L), 1 <= L <= context_length, each row `[SOT] tokens [EOT] 0...`.

        Returns float32 (N, output_dim): the EOT position's output after ln_final, @ text_projection.
        The EOT position is `ids.argmax(-1)` (EOT 49407 is the largest id; the first one wins). Under the
        causal mask, padding after EOT cannot change the result, so L = 32 and L = 77 agree.
        """
        _check_ids(ids, self.text_cfg)
        dtype = self.text_projection.dtype
        length = ids.shape[1]
        x = self.token_embedding(ids).to(dtype) + self.positional_embedding[:length].to(dtype)
        x = self.transformer(x)
        x = self.ln_final(x)
        eot = ids.argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        return x.float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(ids)

    def to_reference_precision(self) -> "Clip":
        """Cast to the reference's mixed precision and return self.

        Conv, linear, attention and projection weights become fp16; embeddings, LayerNorms and logit_scale
        stay as they are (fp32), matching OpenAI CLIP's convert_weights. Compared with `half()` this keeps
        fp32 LayerNorm affine parameters, so scores follow the reference more closely.
        """
        for p in _reference_fp16_params(self):
            p.data = p.data.half()
        return self
