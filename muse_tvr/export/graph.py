"""Export-friendly views of a `MuseModel`: the same weights, the scan as one custom op.

Three modules, each a plain `forward` over tensors that `torch.onnx.export` can trace:

- `HeadGraph`   tokens (B, T, 1+g*g, C) + mask (B, T) -> embedding (B, C) float32, unit norm
                (the MUSE head alone: pyramid, sequence, Mamba blocks, readout, masked pooling)
- `VideoGraph`  frames (B, T, 3, S, S) CLIP-normalised + mask (B, T) -> embedding (B, C) float32
- `TextGraph`   ids (N, max_words) int64 -> embedding (N, C) float32, unit norm

What becomes a custom node (see `contracts.py`):
- the bidirectional selective scan of every block: one `muse::BiSelectiveScan` node per block, inputs in
  `bidirectional_scan_ref`'s order. The depthwise conv stays a standard `Conv` (ONNX Runtime and TensorRT
  run it natively and fast; a custom node would only hide it).
- the pyramid: `pyramid="decomposed"` (default) writes it as standard ONNX ops (Conv, MaxPool,
  ConvTranspose, LayerNormalization, erf GELU), which every runtime executes with its own tuned kernels;
  `pyramid="op"` writes ONE `muse::MusePyramidSequence` node (tokens + parameters -> the (B, L, C)
  sequence) for runtimes that have a fused pyramid plugin. Both compute the same thing.

The modules reuse the model's parameters (no copies) except for values precomputed once for export: the
anti-causal conv filter reversed in time, A = -exp(A_log), and float32 copies of D and the dt bias.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.config import scale_grid
from ..engine.sequence import assemble_sequence, pool_frames, readout
from .contracts import BI_SELECTIVE_SCAN, PYRAMID_SEQUENCE

PYRAMID_MODES = ("decomposed", "op")


def _depthwise_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, anti_causal: bool,
                         ) -> torch.Tensor:
    """x (B, L, D), weight (D, 1, W) already time-reversed for the anti-causal direction -> (B, L, D).

    Both directions pad W-1 on both sides and slice, so the graph has no Flip (a Slice with negative step
    that some TensorRT versions handle poorly): causal keeps the first L outputs, anti-causal the last L.
    """
    width = weight.shape[-1]
    length = x.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=width - 1, groups=weight.shape[0])
    y = y[..., width - 1:] if anti_causal else y[..., :length]
    return F.silu(y.transpose(1, 2))


class _ExportBiMamba(nn.Module):
    """`BiMamba.forward` with the scan as a `BiSelectiveScan` node. h (B, L, d) -> (B, L, d)."""

    def __init__(self, mamba):
        super().__init__()
        self.m = mamba
        self.dt_rank, self.d_state = mamba.dt_rank, mamba.d_state
        self.register_buffer("conv_w_b_rev", mamba.conv1d_b.weight.detach().flip(-1).clone(), persistent=False)
        for tag, A_log, D, dtp in (("f", mamba.A_log, mamba.D, mamba.dt_proj),
                                   ("b", mamba.A_b_log, mamba.D_b, mamba.dt_proj_b)):
            self.register_buffer(f"A_{tag}", -torch.exp(A_log.detach().float()), persistent=False)
            self.register_buffer(f"D_{tag}", D.detach().float().clone(), persistent=False)
            self.register_buffer(f"dt_bias_{tag}", dtp.bias.detach().float().clone(), persistent=False)

    def _branch(self, x, conv_w, conv_b, x_proj, dt_proj, anti_causal):
        u = _depthwise_conv_silu(x, conv_w, conv_b, anti_causal)
        dt_in, Bm, Cm = torch.split(x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return u, F.linear(dt_in, dt_proj.weight), Bm, Cm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        m = self.m
        x, z = m.in_proj(h).chunk(2, dim=-1)
        u_f, dl_f, B_f, C_f = self._branch(x, m.conv1d.weight, m.conv1d.bias, m.x_proj, m.dt_proj, False)
        u_b, dl_b, B_b, C_b = self._branch(x, self.conv_w_b_rev, m.conv1d_b.bias, m.x_proj_b, m.dt_proj_b, True)
        y = BI_SELECTIVE_SCAN.call([u_f, dl_f, B_f, C_f, u_b, dl_b, B_b, C_b, z, self.A_f, self.A_b,
                                    self.D_f, self.D_b, self.dt_bias_f, self.dt_bias_b])
        return m.out_proj(y)


def pyramid_weights(pyramid: nn.Module) -> list[torch.Tensor]:
    """The pyramid parameters in `MusePyramidSequence` order: level by level, state-dict order."""
    return [p for stage in pyramid.mamba_stages for p in stage.parameters()]


def pyramid_sequence_reference(tokens: torch.Tensor, weights: Sequence[torch.Tensor], scales: Sequence[float],
                               grid: int, eps: float = 1e-5) -> torch.Tensor:
    """The `MusePyramidSequence` op in plain PyTorch: tokens (B, T, 1+g*g, C) -> (B, L, C), scale-wise order.

    `weights` as `pyramid_weights` lists them. Convs run in the tokens' dtype, LayerNorms in float32.
    """
    b, t, n, c = tokens.shape
    if n != 1 + grid * grid:
        raise ValueError(f"tokens must be (B, T, {1 + grid * grid}, C) for grid {grid}, got {tuple(tokens.shape)}")
    fmap = tokens[:, :, 1:].reshape(b * t, grid, grid, c).permute(0, 3, 1, 2)
    it = iter(weights)

    def ln(x):
        w, bias = next(it), next(it)
        y = F.layer_norm(x.permute(0, 2, 3, 1).float(), (x.shape[1],), w.float(), bias.float(), eps)
        return y.to(x.dtype).permute(0, 3, 1, 2)

    def conv(x, **kw):
        w, bias = next(it), next(it)
        return F.conv2d(x, w.to(x.dtype), bias.to(x.dtype), **kw)

    def conv_t(x):
        w, bias = next(it), next(it)
        return F.conv_transpose2d(x, w.to(x.dtype), bias.to(x.dtype), stride=2)

    levels = []
    for s in scales:
        x = fmap
        if s in (0.5, 0.25):
            k = 2 if s == 0.5 else 4
            x = F.max_pool2d(x, k, k)
        elif s == 2.0:
            x = conv_t(x)
        elif s == 4.0:
            x = conv_t(F.gelu(ln(conv_t(x))))
        elif s != 1.0:
            raise ValueError(f"unsupported pyramid scale {s}")
        x = ln(conv(F.gelu(ln(conv(x))), padding=1))
        h = scale_grid(grid, s)
        levels.append(x.reshape(b, t, c, h * h).transpose(2, 3))
    if next(it, None) is not None:
        raise ValueError("more pyramid weights than the scales use")
    return assemble_sequence(tokens[:, :, 0], levels, "scale_wise")


class HeadGraph(nn.Module):
    """The MUSE head alone. forward(tokens (B, T, 1+g*g, C) head dtype, mask (B, T) float32) -> (B, C) float32."""

    def __init__(self, model, pyramid: str = "decomposed"):
        super().__init__()
        if pyramid not in PYRAMID_MODES:
            raise ValueError(f"pyramid mode {pyramid!r} is not one of {PYRAMID_MODES}")
        if pyramid == "op" and model.config.head.order != "scale_wise":
            raise ValueError("the MusePyramidSequence op only builds the scale_wise order")
        self.config = model.config
        self.pyramid_mode = pyramid
        self.pyramid = model.pyramid
        self.blocks = nn.ModuleList(block for block in model.head.MS_mamba)
        self.mixers = nn.ModuleList(_ExportBiMamba(block.mamba) for block in model.head.MS_mamba)

    def sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if self.pyramid_mode == "op":
            b, t = tokens.shape[:2]
            length = t * (1 + sum(scale_grid(cfg.vision.grid, s) ** 2 for s in cfg.head.scales))
            return PYRAMID_SEQUENCE.call(
                [tokens, pyramid_weights(self.pyramid)],
                {"scales": [float(s) for s in cfg.head.scales], "grid": cfg.vision.grid,
                 "layer_norm_eps": cfg.head.layer_norm_eps},
                out_shape=[b, length, tokens.shape[3]])
        levels = self.pyramid(tokens[:, :, 1:])
        return assemble_sequence(tokens[:, :, 0], levels, cfg.head.order)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(tokens)
        for block, mixer in zip(self.blocks, self.mixers):
            seq = seq + block.temporal_fc(mixer(block.layer_norm1(seq)))
        return pool_frames(readout(seq, tokens.shape[1], self.config.head.order), mask)


class VideoGraph(nn.Module):
    """CLIP vision + the head. forward(frames (B, T, 3, S, S), mask (B, T) float32) -> (B, C) float32."""

    def __init__(self, model, pyramid: str = "decomposed"):
        super().__init__()
        self.visual = model.clip.visual
        self.head = HeadGraph(model, pyramid)
        self.head_dtype = model.head_dtype

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        tokens = self.visual(frames.reshape(b * t, *frames.shape[2:]))
        tokens = tokens.reshape(b, t, tokens.shape[1], tokens.shape[2]).to(self.head_dtype)
        return self.head(tokens, mask)


class TextGraph(nn.Module):
    """CLIP text. forward(ids (N, max_words) int64) -> (N, C) float32, unit norm."""

    def __init__(self, model):
        super().__init__()
        self.clip = model.clip

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.clip.encode_text(ids).float()
        return t / t.norm(dim=-1, keepdim=True)
