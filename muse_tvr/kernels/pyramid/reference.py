"""The feature pyramid and sequence assembly in plain PyTorch: the model's definition of both, and the
oracle for the fused Triton pyramid (`triton_pyramid.py`). docs/model.md sections 3 and 4.

Written with functional ops so the parameters can come from a module or from a bare state dict (a pyramid
sidecar), and so each step is visible:

  per scale: prefix (MaxPool / nothing / ConvTranspose) -> Conv1x1 -> LN(C) -> GELU(erf) -> Conv3x3 -> LN(C)

Convolutions run in the input dtype, LayerNorms in float32 with the result cast back.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# MUSE's LayerNorm epsilon (pyramid and blocks); HeadConfig.layer_norm_eps defaults to it.
LAYER_NORM_EPS = 1e-5
SEQUENCE_ORDERS = ("scale_wise", "frame_wise", "spatial_wise")

# Index of each layer inside one scale's nn.Sequential (the sidecar / state-dict key numbering).
# Keys: "pre" = resampling prefix (ConvTranspose for 2.0), "pre_ln"/"pre2" only for 4.0.
STAGE_LAYOUT: dict[float, dict[str, int]] = {
    0.25: {"conv1": 1, "ln1": 2, "conv3": 4, "ln2": 5},
    0.5: {"conv1": 1, "ln1": 2, "conv3": 4, "ln2": 5},
    1.0: {"conv1": 0, "ln1": 1, "conv3": 3, "ln2": 4},
    2.0: {"pre": 0, "conv1": 1, "ln1": 2, "conv3": 4, "ln2": 5},
    4.0: {"pre": 0, "pre_ln": 1, "pre2": 3, "conv1": 4, "ln1": 5, "conv3": 7, "ln2": 8},
}


def scale_grid(grid: int, scale: float) -> int:
    """Side of one pyramid level's map for a patch grid of side `grid` (pooling floors)."""
    if scale not in STAGE_LAYOUT:
        raise ValueError(f"unsupported pyramid scale {scale}; choose from {sorted(STAGE_LAYOUT)}")
    return grid // round(1 / scale) if scale < 1.0 else grid * round(scale)


def sequence_length(frames: int, grid: int, scales: Sequence[float], order: str = "scale_wise") -> int:
    """Length L of the head's input sequence for `frames` frames (docs/model.md section 4)."""
    per_frame = sum(scale_grid(grid, s) ** 2 for s in scales)
    return frames + per_frame if order == "spatial_wise" else frames * (1 + per_frame)


def stage_params(params: nn.Module | Mapping[str, torch.Tensor], scale_index: int,
                 scale: float) -> dict[str, torch.Tensor]:
    """The tensors of one pyramid scale as {"conv1.weight": ..., "ln1.bias": ..., ...}.

    `params` is a `FeaturePyramid`, or a state dict whose keys end in `mamba_stages.{i}.{layer}.{weight|bias}`
    (a FeaturePyramid state dict, a pyramid sidecar, or a whole MuseModel state dict with `pyramid.` prefix).
    """
    if scale not in STAGE_LAYOUT:
        raise ValueError(f"unsupported pyramid scale {scale}; choose from {sorted(STAGE_LAYOUT)}")
    if isinstance(params, nn.Module):
        params = dict(params.named_parameters())  # not state_dict(): that detaches, which tracing must not see
    by_suffix: dict[str, torch.Tensor] = {}
    marker = "mamba_stages."
    for key, value in params.items():
        at = key.rfind(marker)
        if at >= 0:
            by_suffix[key[at + len(marker):]] = value
    out: dict[str, torch.Tensor] = {}
    missing = []
    for name, idx in STAGE_LAYOUT[scale].items():
        for kind in ("weight", "bias"):
            key = f"{scale_index}.{idx}.{kind}"
            if key not in by_suffix:
                missing.append(f"mamba_stages.{key}")
            else:
                out[f"{name}.{kind}"] = by_suffix[key]
    if missing:
        raise ValueError(f"pyramid parameters for scale {scale} (stage {scale_index}) are missing: "
                         f"{', '.join(missing)}")
    return out


def flat_params(params: nn.Module | Mapping[str, torch.Tensor], scales: Sequence[float]) -> list[torch.Tensor]:
    """The pyramid parameters as one list, level by level, each level in state-dict order (layer index,
    weight before bias): the `weights` input of the MusePyramidSequence op."""
    out = []
    for i, s in enumerate(scales):
        p = stage_params(params, i, s)
        for name, _ in sorted(STAGE_LAYOUT[s].items(), key=lambda kv: kv[1]):
            out += [p[f"{name}.weight"], p[f"{name}.bias"]]
    return out


def unflat_params(weights: Sequence[torch.Tensor], scales: Sequence[float]) -> dict[str, torch.Tensor]:
    """The inverse of `flat_params`: a `mamba_stages.*` state dict."""
    keys = [f"mamba_stages.{i}.{idx}.{kind}" for i, s in enumerate(scales)
            for idx in sorted(STAGE_LAYOUT[s].values()) for kind in ("weight", "bias")]
    if len(keys) != len(weights):
        raise ValueError(f"scales {tuple(scales)} take {len(keys)} pyramid tensors, got {len(weights)}")
    return dict(zip(keys, weights))


def _channel_ln(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map, in float32, returned in the input dtype."""
    y = F.layer_norm(x.permute(0, 2, 3, 1).float(), (x.shape[1],), weight.float(), bias.float(), eps)
    return y.to(x.dtype).permute(0, 3, 1, 2)


def pyramid_level_ref(fmap: torch.Tensor, p: Mapping[str, torch.Tensor], scale: float,
                      eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """One pyramid level: fmap (N, C, g, g) -> (N, C, h, h) with h = scale_grid(g, scale)."""
    dt = fmap.dtype
    w = {k: v.to(device=fmap.device, dtype=dt) for k, v in p.items()}
    x = fmap
    if scale == 0.5:
        x = F.max_pool2d(x, kernel_size=2, stride=2)
    elif scale == 0.25:
        x = F.max_pool2d(x, kernel_size=4, stride=4)
    elif scale == 2.0:
        x = F.conv_transpose2d(x, w["pre.weight"], w["pre.bias"], stride=2)
    elif scale == 4.0:
        x = F.conv_transpose2d(x, w["pre.weight"], w["pre.bias"], stride=2)
        x = F.gelu(_channel_ln(x, w["pre_ln.weight"], w["pre_ln.bias"], eps))
        x = F.conv_transpose2d(x, w["pre2.weight"], w["pre2.bias"], stride=2)
    x = F.conv2d(x, w["conv1.weight"], w["conv1.bias"])
    x = F.gelu(_channel_ln(x, w["ln1.weight"], w["ln1.bias"], eps))
    x = F.conv2d(x, w["conv3.weight"], w["conv3.bias"], padding=1)
    return _channel_ln(x, w["ln2.weight"], w["ln2.bias"], eps)


def pyramid_sequence_ref(tokens: torch.Tensor, params: nn.Module | Mapping[str, torch.Tensor],
                         scales: Sequence[float] = (0.5, 1.0, 2.0), order: str = "scale_wise",
                         eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """CLIP tokens -> the Mamba head's input sequence, by the book.

    tokens: (B, T, 1 + g*g, C) float (fp32/fp16/bf16), token 0 = CLS, then the g x g patch grid row-major.
    params: a FeaturePyramid or a state dict with `mamba_stages.*` keys (see `stage_params`).
    scales: the pyramid's scale factors, in the pyramid's stage order.
    order: "scale_wise" (released), "frame_wise" or "spatial_wise" (`assemble_sequence`).
    eps: the LayerNorms' epsilon.
    Returns (B, L, C) in the dtype of `tokens`; for scale_wise L = T * (1 + sum_i h_i^2).
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4:
        raise ValueError(f"tokens must be a 4-D tensor (B, T, 1+g*g, C), got "
                         f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
    b, t, n, c = tokens.shape
    g = int(round((n - 1) ** 0.5))
    if n < 2 or g * g != n - 1:
        raise ValueError(f"tokens must hold CLS + a square patch grid along dim 2, got {n} tokens")
    if not tokens.is_floating_point():
        raise ValueError(f"tokens must be floating point, got {tokens.dtype}")
    fmap = tokens[:, :, 1:].reshape(b * t, g, g, c).permute(0, 3, 1, 2)
    levels = []
    for i, s in enumerate(scales):
        y = pyramid_level_ref(fmap, stage_params(params, i, s), s, eps)
        levels.append(y.reshape(b, t, c, -1).transpose(2, 3))
    return assemble_sequence(tokens[:, :, 0], levels, order)


def assemble_sequence(cls: torch.Tensor, levels: list[torch.Tensor], order: str = "scale_wise") -> torch.Tensor:
    """The head's input sequence from cls (B, T, C) and levels [(B, T, n_i, C)]: (B, L, C).
    No positional or type embeddings are added (docs/model.md section 4).
      scale_wise (released): [cls_0..cls_{T-1}] + [level 0 of all frames, frame-major] + [level 1 ...] + ...
      frame_wise:            for each frame t: [cls_t, level 0 of t, level 1 of t, ...]
      spatial_wise:          [cls_0..cls_{T-1}] + [each level averaged over frames, level by level]
    """
    b, t, c = cls.shape
    if order == "scale_wise":
        return torch.cat([cls] + [lv.reshape(b, -1, c) for lv in levels], dim=1)
    if order == "frame_wise":
        return torch.cat([cls.unsqueeze(2)] + levels, dim=2).reshape(b, -1, c)
    if order == "spatial_wise":
        return torch.cat([cls] + [lv.mean(dim=1) for lv in levels], dim=1)
    raise ValueError(f"unknown sequence order {order!r}; choose from {SEQUENCE_ORDERS}")
