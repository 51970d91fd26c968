"""Export views of a `MuseModel`: the model's own forward code, with the custom ops as ONNX nodes.

- `HeadGraph`   tokens (B, T, 1+g*g, C) + mask (B, T) -> embedding (B, C) float32, unit norm (the learner)
- `VideoGraph`  frames (B, T, 3, S, S) CLIP-normalised + mask (B, T) -> embedding (B, C) float32
- `TextGraph`   ids (N, max_words) int64 -> embedding (N, C) float32, unit norm

They run `muse_tvr.engine.model.learn` with the `EXPORT` ops: the reference conv (standard Conv nodes,
which ONNX Runtime and TensorRT run natively), the bidirectional scan of every block as one
`muse::BiSelectiveScan` node, and the pyramid either decomposed into standard ops (`pyramid="decomposed"`,
default: every runtime uses its own tuned convs) or as ONE `muse::MusePyramidSequence` node
(`pyramid="op"`, for runtimes with the fused pyramid plugin). Derived weights (the out_proj/temporal_fc
fold, A = -exp(A_log)) are computed in the graph from the checkpoint's parameters; the exporter and the
runtimes fold them to constants.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..engine.backend import Backend
from ..engine.model import frame_tokens, learn, text_embedding
from ..kernels import causal_conv, pyramid
from ..kernels.contracts import BI_SELECTIVE_SCAN, PYRAMID_SEQUENCE

PYRAMID_MODES = ("decomposed", "op")


def scan_node(**kw: torch.Tensor) -> torch.Tensor:
    """`bidirectional_scan_ref`'s contract as a BiSelectiveScan node (the contract's input order)."""
    return BI_SELECTIVE_SCAN.call([kw[t.name] for t in BI_SELECTIVE_SCAN.inputs])


def pyramid_node(tokens, params, scales, order, eps) -> torch.Tensor:
    """`pyramid_sequence_ref`'s contract as a MusePyramidSequence node (scale_wise order only)."""
    if order != "scale_wise":
        raise ValueError("the MusePyramidSequence op only builds the scale_wise order")
    b, t, n, c = tokens.shape
    grid = math.isqrt(n - 1)
    return PYRAMID_SEQUENCE.call(
        [tokens, pyramid.flat_params(params, scales)],
        {"scales": [float(s) for s in scales], "grid": grid, "layer_norm_eps": eps},
        out_shape=[b, pyramid.sequence_length(t, grid, scales), c])


EXPORT = {mode: Backend(f"export-{mode}", causal_conv.bidirectional_causal_conv_ref, scan_node,
                        pyramid.pyramid_sequence_ref if mode == "decomposed" else pyramid_node)
          for mode in PYRAMID_MODES}


class HeadGraph(nn.Module):
    """The learner. forward(tokens (B, T, 1+g*g, C) head dtype, mask (B, T) float32) -> (B, C) float32."""

    def __init__(self, model, pyramid: str = "decomposed"):
        super().__init__()
        if pyramid not in PYRAMID_MODES:
            raise ValueError(f"pyramid mode {pyramid!r} is not one of {PYRAMID_MODES}")
        if pyramid == "op" and model.config.head.order != "scale_wise":
            raise ValueError("the MusePyramidSequence op only builds the scale_wise order")
        self.config = model.config
        self.pyramid_mode = pyramid
        self.pyramid = model.pyramid
        self.head = model.head

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return learn(self.pyramid, self.head, tokens, mask, EXPORT[self.pyramid_mode])


class VideoGraph(nn.Module):
    """CLIP vision + the learner. forward(frames (B, T, 3, S, S), mask (B, T) float32) -> (B, C) float32."""

    def __init__(self, model, pyramid: str = "decomposed"):
        super().__init__()
        self.visual = model.clip.visual
        self.head = HeadGraph(model, pyramid)
        self.head_dtype = model.head_dtype

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(frame_tokens(self.visual, frames).to(self.head_dtype), mask)


class TextGraph(nn.Module):
    """CLIP text. forward(ids (N, max_words) int64) -> (N, C) float32, unit norm."""

    def __init__(self, model):
        super().__init__()
        self.clip = model.clip

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return text_embedding(self.clip, ids)
