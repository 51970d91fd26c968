"""Plain PyTorch reference of the whole sequence builder: CLS copies + the feature pyramid, assembled.

This is the oracle for the fused Triton pyramid (`triton_pyramid.py`). It computes exactly what
`muse_tvr.engine.pyramid.FeaturePyramid` followed by `muse_tvr.engine.sequence.assemble_sequence`
computes (muse-model.md sections 3 and 4), written with functional ops so that the parameters can come
from a module or from a bare state dict (e.g. a pyramid sidecar), and so each step is visible:

  per scale: prefix (MaxPool / nothing / ConvTranspose) -> Conv1x1 -> LN(C) -> GELU(erf) -> Conv3x3 -> LN(C)

Convolutions run in the input dtype, LayerNorms in float32 with the result cast back, as the reference
model does.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.sequence import assemble_sequence

LAYER_NORM_EPS = 1e-5

# Index of each layer inside one scale's nn.Sequential (the sidecar / state-dict key numbering).
# Keys: "pre" = resampling prefix (ConvTranspose for 2.0), "pre_ln"/"pre2" only for 4.0.
STAGE_LAYOUT: dict[float, dict[str, int]] = {
    0.25: {"conv1": 1, "ln1": 2, "conv3": 4, "ln2": 5},
    0.5: {"conv1": 1, "ln1": 2, "conv3": 4, "ln2": 5},
    1.0: {"conv1": 0, "ln1": 1, "conv3": 3, "ln2": 4},
    2.0: {"pre": 0, "conv1": 1, "ln1": 2, "conv3": 4, "ln2": 5},
    4.0: {"pre": 0, "pre_ln": 1, "pre2": 3, "conv1": 4, "ln1": 5, "conv3": 7, "ln2": 8},
}


def stage_params(params: nn.Module | Mapping[str, torch.Tensor], scale_index: int,
                 scale: float) -> dict[str, torch.Tensor]:
    """The tensors of one pyramid scale as {"conv1.weight": ..., "ln1.bias": ..., ...}.

    `params` is a `FeaturePyramid`, or a state dict whose keys end in `mamba_stages.{i}.{layer}.{weight|bias}`
    (a FeaturePyramid state dict, a pyramid sidecar, or a whole MuseModel state dict with `pyramid.` prefix).
    """
    if scale not in STAGE_LAYOUT:
        raise ValueError(f"unsupported pyramid scale {scale}; choose from {sorted(STAGE_LAYOUT)}")
    if isinstance(params, nn.Module):
        params = params.state_dict()
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


def _channel_ln(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map, in float32, returned in the input dtype."""
    y = F.layer_norm(x.permute(0, 2, 3, 1).float(), (x.shape[1],), weight.float(), bias.float(),
                     LAYER_NORM_EPS)
    return y.to(x.dtype).permute(0, 3, 1, 2)


def pyramid_level_ref(fmap: torch.Tensor, p: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
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
        x = F.gelu(_channel_ln(x, w["pre_ln.weight"], w["pre_ln.bias"]))
        x = F.conv_transpose2d(x, w["pre2.weight"], w["pre2.bias"], stride=2)
    x = F.conv2d(x, w["conv1.weight"], w["conv1.bias"])
    x = F.gelu(_channel_ln(x, w["ln1.weight"], w["ln1.bias"]))
    x = F.conv2d(x, w["conv3.weight"], w["conv3.bias"], padding=1)
    return _channel_ln(x, w["ln2.weight"], w["ln2.bias"])


def pyramid_sequence_ref(tokens: torch.Tensor, params: nn.Module | Mapping[str, torch.Tensor],
                         scales: Sequence[float] = (0.5, 1.0, 2.0), order: str = "scale_wise") -> torch.Tensor:
    """CLIP tokens -> the Mamba head's input sequence, by the book.

    tokens: (B, T, 1 + g*g, C) float (fp32/fp16/bf16), token 0 = CLS, then the g x g patch grid row-major.
    params: a FeaturePyramid or a state dict with `mamba_stages.*` keys (see `stage_params`).
    scales: the pyramid's scale factors, in the pyramid's stage order.
    order: "scale_wise" (released), "frame_wise" or "spatial_wise" (muse_tvr.engine.sequence).
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
        y = pyramid_level_ref(fmap, stage_params(params, i, s), s)
        levels.append(y.reshape(b, t, c, -1).transpose(2, 3))
    return assemble_sequence(tokens[:, :, 0], levels, order)
