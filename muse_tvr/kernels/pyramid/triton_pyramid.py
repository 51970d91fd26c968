"""Fused Triton feature pyramid: CLIP tokens (B, T, 1+g*g, C) -> the head's sequence (B, L, C).

Per scale, two launches; plus one launch for the CLS tokens (see docs/pyramid-kernel.md):

  stage 1  `_pyramid_stage1_kernel`: reads the CLIP patch tokens straight from the token tensor (no
           permute copy), applies the resampling prologue in registers (max pool 2x2 / 4x4, identity,
           or nearest-source gather for the 2.0 scale), and runs the 1x1 conv as a GEMM over pixels
           with bias + LayerNorm(C) + exact-erf GELU fused into the epilogue. The 2.0 scale's
           ConvTranspose2d(k2, s2) + Conv1x1 are folded on the host into four C x C matrices, one per
           sub-pixel (docs/model.md section 3), so it is one GEMM per sub-pixel. Writes the activations
           to a scratch map (frames, h, h, C) allocated by the wrapper: the 3x3 conv needs neighbours.
  stage 2  `_pyramid_stage2_kernel`: the 3x3 conv (padding 1) as an implicit GEMM over 9 shifted taps
           of the scratch map, bias + LayerNorm(C) in the epilogue, and the result stored straight into
           its rows of the (B, L, C) sequence buffer.
  CLS      `_cls_copy_kernel`: copies token 0 of every frame into its sequence position (bit-exact).

Nothing goes through torch.cat or a permute copy. Dot products accumulate in fp32; LayerNorm statistics
are fp32; fp32 inputs use IEEE (not TF32) dots so the result matches the fp32 reference to fp32
tolerance. Channel counts that are not powers of two (e.g. 48) are handled by masking.

Supported natively: scales 0.25, 0.5, 1.0, 2.0; orders "scale_wise" and "frame_wise". The 4.0 scale
(ConvT -> LN -> GELU -> ConvT, not foldable) is computed by the reference for that level and written
into its slot; order "spatial_wise" (a mean over frames) falls back to the reference entirely. Both
fallbacks warn.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import nn

from .. import triton_interpreting
from ..params import derived
from .reference import (LAYER_NORM_EPS, STAGE_LAYOUT, pyramid_level_ref, pyramid_sequence_ref, scale_grid,
                        sequence_length, stage_params)

FUSED_SCALES = (0.25, 0.5, 1.0, 2.0)
FUSED_ORDERS = ("scale_wise", "frame_wise")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_POOL = {0.25: 4, 0.5: 2, 1.0: 1, 2.0: 1}
_UPS = {0.25: 1, 0.5: 1, 1.0: 1, 2.0: 2}
_TL_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# ----------------------------------------------------------------------------------------------------
# kernels. ABI convention (TensorRT AOT plugins, docs/pyramid-kernel.md): input pointers, then int32
# scalars, then output pointers; float parameters are constexprs.
# ----------------------------------------------------------------------------------------------------
@triton.jit
def _bias_layer_norm(acc, bias_ptr, lnw_ptr, lnb_ptr, offs_c, c_ok, C, EPS: tl.constexpr):
    """acc [P, BLOCK_C] fp32 (zero in masked columns) -> LayerNorm(acc + bias) over the C real columns."""
    bias = tl.load(bias_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    lnw = tl.load(lnw_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    lnb = tl.load(lnb_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    y = acc + bias[None, :]
    mean = tl.sum(y, axis=1) / C
    d = tl.where(c_ok[None, :], y - mean[:, None], 0.0)
    var = tl.sum(d * d, axis=1) / C
    rstd = 1.0 / tl.sqrt_rn(var + EPS)
    return d * rstd[:, None] * lnw[None, :] + lnb[None, :]


@triton.jit
def _pyramid_stage1_kernel(
    x_ptr, w_ptr, bias_ptr, lnw_ptr, lnb_ptr,
    T, G, HS, C, sxb, sxt, sxn, sxc,
    out_ptr,
    POOL: tl.constexpr, UPS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr, EPS: tl.constexpr, PREC: tl.constexpr, PROLOGUE_ONLY: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """Prologue + Conv1x1 GEMM + bias + LN + GELU for one frame x BLOCK_P source pixels.

    x: tokens (B, T, 1+G*G, C_in) with strides (sxb, sxt, sxn, sxc); w: (UPS*UPS, C_in, C) K-major;
    out: (B*T, H, H, C) contiguous with H = HS*UPS. HS is the side of the pixel grid this kernel walks
    (the pooled grid, or the source grid for the upsampling scale). C_in == C here (the 2.0 scale's
    256-channel ConvT output is folded away). PROLOGUE_ONLY stores the prologue's input map instead of
    running the GEMM (for exactness tests of the pooling/gather). DOT_F32 widens the dot operands to
    fp32 (exact for bf16/fp16 products): only for the interpreter, whose bf16 tl.dot is wrong.
    """
    frame = tl.program_id(0).to(tl.int64)
    pblk = tl.program_id(1)
    bi = frame // T
    ti = frame % T
    offs_p = pblk * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < HS * HS
    pi = offs_p // HS
    pj = offs_p % HS
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    H = HS * UPS
    x_frame = x_ptr + bi * sxb + ti * sxt
    out_frame = out_ptr + frame * H * H * C
    # A runtime loop (not unrolled): the 2.0 scale's four sub-pixel GEMMs share one body, which keeps
    # the code (and compile time) at one GEMM; the re-read token rows are L1/L2 hits.
    for sub in range(UPS * UPS):
        oi = pi * UPS + sub // UPS
        oj = pj * UPS + sub % UPS
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < C
            m = p_ok[:, None] & k_ok[None, :]
            # The resampling prologue happens on the tile as it is loaded: the map is never rewritten.
            tok = 1 + (pi * POOL) * G + pj * POOL
            xt = tl.load(x_frame + tok[:, None] * sxn + offs_k[None, :] * sxc, mask=m, other=0.0)
            for tap in tl.static_range(1, POOL * POOL):
                tok = 1 + (pi * POOL + tap // POOL) * G + pj * POOL + tap % POOL
                v = tl.load(x_frame + tok[:, None] * sxn + offs_k[None, :] * sxc, mask=m, other=0.0)
                xt = tl.maximum(xt, v)
            # A no-op on GPU; the interpreter widens bf16 in tl.maximum.
            xt = xt.to(x_ptr.dtype.element_ty)
            if PROLOGUE_ONLY:
                dst = out_frame + (oi * H + oj)[:, None] * C + offs_k[None, :]
                tl.store(dst, xt.to(out_ptr.dtype.element_ty), mask=m)
            else:
                wt = tl.load(w_ptr + sub * C * C + offs_k[:, None] * C + offs_c[None, :],
                             mask=k_ok[:, None] & c_ok[None, :], other=0.0)
                if DOT_F32:
                    acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
                else:
                    acc = tl.dot(xt, wt, acc, input_precision=PREC)
        if not PROLOGUE_ONLY:
            y = _bias_layer_norm(acc, bias_ptr, lnw_ptr, lnb_ptr, offs_c, c_ok, C, EPS)
            y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
            dst = out_frame + (oi * H + oj)[:, None] * C + offs_c[None, :]
            tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _pyramid_stage2_kernel(
    s_ptr, w_ptr, bias_ptr, lnw_ptr, lnb_ptr,
    T, H, C, sob, sol, soc, level_base, frame_stride,
    out_ptr,
    BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, EPS: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr,
):
    """Conv3x3 (padding 1) implicit GEMM + bias + LN for one frame x BLOCK_P pixels -> sequence rows.

    s: activations (B*T, H, H, C) contiguous; w: (9, C, C) K-major, tap = 3*dy + dx;
    out: the sequence (B, L, C) with strides (sob, sol, soc); pixel p of frame t lands at row
    level_base + t * frame_stride + p.
    """
    frame = tl.program_id(0).to(tl.int64)
    pblk = tl.program_id(1)
    bi = frame // T
    ti = frame % T
    offs_p = pblk * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < H * H
    pi = offs_p // H
    pj = offs_p % H
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    s_frame = s_ptr + frame * H * H * C
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for tap in range(9):  # not unrolled: one GEMM body, the pipeliner works on the K loop inside
        ni = pi + (tap // 3 - 1)
        nj = pj + (tap % 3 - 1)
        n_ok = p_ok & (ni >= 0) & (ni < H) & (nj >= 0) & (nj < H)  # zero padding of 1
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < C
            xt = tl.load(s_frame + (ni * H + nj)[:, None] * C + offs_k[None, :],
                         mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + tap * C * C + offs_k[:, None] * C + offs_c[None, :],
                         mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            if DOT_F32:
                acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(xt, wt, acc, input_precision=PREC)
    y = _bias_layer_norm(acc, bias_ptr, lnw_ptr, lnb_ptr, offs_c, c_ok, C, EPS)
    rows = level_base + ti * frame_stride + offs_p
    dst = out_ptr + bi * sob + rows[:, None] * sol + offs_c[None, :] * soc
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _cls_copy_kernel(
    x_ptr,
    T, C, sxb, sxt, sxc, sob, sol, soc, cls_stride,
    out_ptr,
    BLOCK_C: tl.constexpr,
):
    """Token 0 of frame t of video b -> sequence row t * cls_stride of video b (same dtype: exact)."""
    frame = tl.program_id(0).to(tl.int64)
    bi = frame // T
    ti = frame % T
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        v = tl.load(x_ptr + bi * sxb + ti * sxt + offs_c * sxc, mask=c_ok)
        tl.store(out_ptr + bi * sob + ti * cls_stride * sol + offs_c * soc, v, mask=c_ok)


# ----------------------------------------------------------------------------------------------------
# launch configuration (shared with the AOT test so that what is checked is what runs)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchConfig:
    block_p: int
    block_k: int
    block_c: int
    num_warps: int
    num_stages: int


def launch_config(channels: int, dtype: torch.dtype, interpret: bool | None = None) -> LaunchConfig:
    """Tile sizes for C channels. Each program holds a full [BLOCK_P, next_pow2(C)] fp32 accumulator
    because the LayerNorm epilogue needs whole rows; the weight tile [BLOCK_K, BLOCK_C] is kept under
    32 KiB per pipeline stage so two stages fit the 99 KiB shared memory of sm_86/sm_89."""
    interpret = triton_interpreting() if interpret is None else interpret
    block_c = max(16, triton.next_power_of_2(channels))
    if interpret:
        # The interpreter runs programs one after another: few, large programs are fastest.
        return LaunchConfig(block_p=64, block_k=block_c, block_c=block_c, num_warps=4, num_stages=1)
    elem = torch.empty((), dtype=dtype).element_size()
    block_k = max(16, min(64, 32768 // (block_c * elem)))
    block_p = 32 if block_c <= 512 else 16
    num_warps = 8 if block_c >= 256 else 4
    return LaunchConfig(block_p=block_p, block_k=block_k, block_c=block_c, num_warps=num_warps, num_stages=2)


def _dot_f32(dtype: torch.dtype) -> bool:
    # The triton 3.8 interpreter multiplies bf16 dot operands as raw bit patterns (garbage); widening
    # them to fp32 first is exact (8-bit mantissa products fit fp32). Never needed on a GPU.
    return triton_interpreting() and dtype == torch.bfloat16


def _precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    # input_precision only matters for fp32 operands; "ieee" keeps fp32 results at fp32 tolerance.
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


# ----------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------
@dataclass
class PackedLevel:
    """One scale's weights in kernel layout. w1 (n_sub, C, C) and w3 (9, C, C) are K-major in the compute
    dtype (dot operands must share the activation dtype); biases and LN affine are fp32."""
    scale: float
    w1: torch.Tensor | None
    b1: torch.Tensor | None
    ln1_w: torch.Tensor | None
    ln1_b: torch.Tensor | None
    w3: torch.Tensor | None
    b3: torch.Tensor | None
    ln2_w: torch.Tensor | None
    ln2_b: torch.Tensor | None
    raw: dict[str, torch.Tensor]  # the unpacked tensors (for reference fallbacks)


@dataclass
class PackedPyramid:
    scales: tuple[float, ...]
    channels: int
    dtype: torch.dtype
    device: torch.device
    levels: list[PackedLevel]
    eps: float = LAYER_NORM_EPS


def fold_upsample(convt_w: torch.Tensor, convt_b: torch.Tensor, conv1_w: torch.Tensor,
                  conv1_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ConvTranspose2d(C, C', k2, s2) then Conv1x1(C' -> C) as four K-major C x C maps + one bias.

    Output pixel (2i+a, 2j+b) only sees input pixel (i, j) through ConvT tap (a, b), and nothing
    non-linear sits between the two convs, so y = (W1 Wt_ab^T) x + (W1 bt + b1). Folded in float64.
    convt_w (C, C', 2, 2), conv1_w (C, C', 1, 1) -> w (4, C, C) with w[2a+b, k, n], bias (C,).
    """
    wt = convt_w.double()
    w1 = conv1_w.double()[:, :, 0, 0]  # (C_out, C')
    maps = [wt[:, :, a, b] @ w1.t() for a in range(2) for b in range(2)]  # each (C_in, C_out)
    bias = w1 @ convt_b.double() + conv1_b.double()
    return torch.stack(maps), bias


def pack_pyramid(params: nn.Module | Mapping[str, torch.Tensor], scales: Sequence[float],
                 dtype: torch.dtype, device: torch.device | str, eps: float = LAYER_NORM_EPS) -> PackedPyramid:
    """Rearrange pyramid parameters (FeaturePyramid or `mamba_stages.*` state dict) for the kernels;
    eps is the LayerNorms' epsilon."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"fused pyramid supports {SUPPORTED_DTYPES}, got {dtype}")
    device = torch.device(device)
    levels = []
    channels = None
    for i, s in enumerate(scales):
        p = stage_params(params, i, s)
        c = p["conv3.weight"].shape[0]
        if channels is not None and c != channels:
            raise ValueError(f"pyramid stages disagree on the channel count ({channels} vs {c})")
        channels = c
        raw = {k: v.detach().to(device) for k, v in p.items()}
        if s not in FUSED_SCALES:
            levels.append(PackedLevel(s, None, None, None, None, None, None, None, None, raw))
            continue
        with torch.no_grad():
            if s == 2.0:
                w1, b1 = fold_upsample(raw["pre.weight"], raw["pre.bias"], raw["conv1.weight"], raw["conv1.bias"])
            else:
                w1 = raw["conv1.weight"].double()[:, :, 0, 0].t().unsqueeze(0)
                b1 = raw["conv1.bias"].double()
            w3 = raw["conv3.weight"].double().permute(2, 3, 1, 0).reshape(9, c, c)  # [3dy+dx, k, n]

            def f32(name: str) -> torch.Tensor:
                return raw[name].float().contiguous()

            levels.append(PackedLevel(
                s, w1.to(dtype).contiguous(), b1.float().contiguous(), f32("ln1.weight"), f32("ln1.bias"),
                w3.to(dtype).contiguous(), f32("conv3.bias"), f32("ln2.weight"), f32("ln2.bias"), raw))
    if channels is None:
        raise ValueError("the pyramid needs at least one scale")
    return PackedPyramid(tuple(scales), channels, dtype, device, levels, eps)


# ----------------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------------
def _check_tokens(tokens: torch.Tensor, pack: PackedPyramid) -> int:
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != 4:
        raise ValueError(f"tokens must have shape (B, T, 1+g*g, C), got {tuple(tokens.shape)}")
    b, t, n, c = tokens.shape
    g = math.isqrt(max(n - 1, 0))
    if n < 2 or g * g != n - 1:
        raise ValueError(f"tokens dim 2 must hold CLS + a square g x g patch grid, got {n} tokens")
    if c != pack.channels:
        raise ValueError(f"tokens have {c} channels but the pyramid weights have {pack.channels}")
    if b == 0 or t == 0:
        raise ValueError(f"tokens must hold at least one video and one frame, got {tuple(tokens.shape)}")
    if tokens.dtype != pack.dtype:
        raise ValueError(f"tokens dtype {tokens.dtype} differs from the packed weights' {pack.dtype}")
    if tokens.device != pack.device:
        raise ValueError(f"tokens are on {tokens.device} but the packed weights on {pack.device}")
    for s in pack.scales:
        if s < 1.0 and g < round(1 / s):
            raise ValueError(f"scale {s} pools {round(1 / s)}x{round(1 / s)} but the patch grid is only {g}x{g}")
    if tokens.device.type == "cpu" and not triton_interpreting():
        raise ValueError("Triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 set before import on CPU")
    return g


def fused_pyramid_sequence(tokens: torch.Tensor, pack: PackedPyramid, order: str = "scale_wise",
                           out: torch.Tensor | None = None, allow_tf32: bool = False,
                           config: LaunchConfig | None = None) -> torch.Tensor:
    """CLIP tokens -> (B, L, C) sequence with the fused kernels (same contract as `pyramid_sequence_ref`).

    tokens: (B, T, 1+g*g, C) in pack.dtype on pack.device (CUDA, or CPU under TRITON_INTERPRET=1); any
      strides. pack: from `pack_pyramid`. order: "scale_wise" / "frame_wise" fused; "spatial_wise" falls
      back to the reference. out: optional preallocated (B, L, C) buffer of tokens.dtype (e.g. a CUDA
      graph's static buffer); every row is overwritten. allow_tf32: TF32 dots for fp32 inputs (faster on
      GPU, ~1e-3 relative error; off by default). Returns the (B, L, C) sequence in tokens.dtype.
    """
    if order not in FUSED_ORDERS + ("spatial_wise",):
        raise ValueError(f"unknown sequence order {order!r}")
    g = _check_tokens(tokens, pack)
    b, t, _, c = tokens.shape
    if order == "spatial_wise":
        warnings.warn("fused pyramid: order 'spatial_wise' (mean over frames) is not fused; "
                      "using the reference", stacklevel=2)
        seq = pyramid_sequence_ref(tokens, _raw_state(pack), pack.scales, order, pack.eps)
        if out is not None:
            out.copy_(seq)
            return out
        return seq
    length = sequence_length(t, g, pack.scales, order)
    if out is None:
        out = torch.empty(b, length, c, dtype=tokens.dtype, device=tokens.device)
    elif tuple(out.shape) != (b, length, c) or out.dtype != tokens.dtype or out.device != tokens.device:
        raise ValueError(f"out must be a ({b}, {length}, {c}) {tokens.dtype} tensor on {tokens.device}, "
                         f"got {tuple(out.shape)} {out.dtype} on {out.device}")
    cfg = config or launch_config(c, tokens.dtype)
    prec = _precision(tokens.dtype, allow_tf32)
    per_frame = sum(scale_grid(g, s) ** 2 for s in pack.scales)
    frames = b * t
    sxb, sxt, sxn, sxc = tokens.stride()
    sob, sol, soc = out.stride()
    # Row of the first token of each level, and the distance between frames, for the two orders.
    cls_stride = 1 if order == "scale_wise" else 1 + per_frame
    _cls_copy_kernel[(frames,)](tokens, t, c, sxb, sxt, sxc, sob, sol, soc, cls_stride, out,
                                BLOCK_C=min(cfg.block_c, 1024))
    sides = [scale_grid(g, s) for s in pack.scales]
    scratch = torch.empty(frames * max(sides) ** 2 * c, dtype=tokens.dtype, device=tokens.device)
    base = t if order == "scale_wise" else 1
    for lv, h in zip(pack.levels, sides):
        frame_stride = h * h if order == "scale_wise" else 1 + per_frame
        if lv.w1 is None:
            warnings.warn(f"fused pyramid: scale {lv.scale} is not fused; computing that level with the "
                          "reference and writing it into its slot", stacklevel=2)
            _reference_level_into(tokens, g, lv, out, base, frame_stride, h, pack.eps)
        else:
            ups = _UPS[lv.scale]
            hs = h // ups
            _pyramid_stage1_kernel[(frames, triton.cdiv(hs * hs, cfg.block_p))](
                tokens, lv.w1, lv.b1, lv.ln1_w, lv.ln1_b,
                t, g, hs, c, sxb, sxt, sxn, sxc,
                scratch,
                POOL=_POOL[lv.scale], UPS=ups, BLOCK_P=cfg.block_p, BLOCK_K=cfg.block_k, BLOCK_C=cfg.block_c,
                EPS=pack.eps, PREC=prec, PROLOGUE_ONLY=False, DOT_F32=_dot_f32(tokens.dtype),
                num_warps=cfg.num_warps, num_stages=cfg.num_stages)
            _pyramid_stage2_kernel[(frames, triton.cdiv(h * h, cfg.block_p))](
                scratch, lv.w3, lv.b3, lv.ln2_w, lv.ln2_b,
                t, h, c, sob, sol, soc, base, frame_stride,
                out,
                BLOCK_P=cfg.block_p, BLOCK_K=cfg.block_k, BLOCK_C=cfg.block_c, EPS=pack.eps, PREC=prec,
                DOT_F32=_dot_f32(tokens.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        base += t * h * h if order == "scale_wise" else h * h
    return out


def _raw_state(pack: PackedPyramid) -> dict[str, torch.Tensor]:
    state = {}
    for i, lv in enumerate(pack.levels):
        for name, idx in STAGE_LAYOUT[lv.scale].items():
            for kind in ("weight", "bias"):
                state[f"mamba_stages.{i}.{idx}.{kind}"] = lv.raw[f"{name}.{kind}"]
    return state


def _reference_level_into(tokens, g, lv, out, base, frame_stride, h, eps) -> None:
    b, t, _, c = tokens.shape
    fmap = tokens[:, :, 1:].reshape(b * t, g, g, c).permute(0, 3, 1, 2)
    y = pyramid_level_ref(fmap, lv.raw, lv.scale, eps).reshape(b, t, c, h * h).transpose(2, 3)
    rows = (base + torch.arange(t, device=out.device)[:, None] * frame_stride
            + torch.arange(h * h, device=out.device)[None, :])
    out[:, rows.reshape(-1)] = y.reshape(b, t * h * h, c)


def pyramid_sequence_triton(tokens: torch.Tensor, params: nn.Module | Mapping[str, torch.Tensor],
                            scales: Sequence[float] = (0.5, 1.0, 2.0), order: str = "scale_wise",
                            eps: float = LAYER_NORM_EPS, allow_tf32: bool = False) -> torch.Tensor:
    """`pyramid_sequence_ref`'s contract on the fused kernels. For a module (a FeaturePyramid) the packed
    weights are derived once per dtype and device and kept until a parameter changes; a state dict is
    packed on every call (call `pack_pyramid` once and `fused_pyramid_sequence` for repeated use)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"tokens must be a float32/float16/bfloat16 tensor, got "
                         f"{tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")

    def pack() -> PackedPyramid:
        return pack_pyramid(params, scales, tokens.dtype, tokens.device, eps)
    if isinstance(params, nn.Module):
        packed = derived(params, f"triton-pyramid:{tokens.dtype}:{tokens.device}:{tuple(scales)}:{eps}", pack)
    else:
        packed = pack()
    return fused_pyramid_sequence(tokens, packed, order, allow_tf32=allow_tf32)


# ----------------------------------------------------------------------------------------------------
# ahead-of-time compile descriptions (muse_tvr.kernels.aot; same format as the scan and conv modules)
# ----------------------------------------------------------------------------------------------------
_TORCH_DTYPE = {v: k for k, v in _TL_DTYPE.items()}


def _aot_config(dtype: str, channels: int) -> tuple[LaunchConfig, torch.dtype]:
    if dtype not in _TORCH_DTYPE:
        raise ValueError(f"dtype must be one of {sorted(_TORCH_DTYPE)}, got {dtype!r}")
    tdt = _TORCH_DTYPE[dtype]
    return launch_config(channels, tdt, interpret=False), tdt


def stage1_aot_spec(dtype: str = "bf16", channels: int = 512, scale: float = 1.0) -> dict:
    """ASTSource inputs for `_pyramid_stage1_kernel` as `fused_pyramid_sequence` launches it on a GPU.
    dtype: Triton name of the activation/weight type ("fp32", "fp16", "bf16"); biases and LN are fp32."""
    if scale not in FUSED_SCALES:
        raise ValueError(f"scale {scale} has no fused kernel; fused scales are {FUSED_SCALES}")
    cfg, tdt = _aot_config(dtype, channels)
    sig = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "bias_ptr": "*fp32", "lnw_ptr": "*fp32",
           "lnb_ptr": "*fp32"}
    sig.update({k: "i32" for k in ("T", "G", "HS", "C", "sxb", "sxt", "sxn", "sxc")})
    sig["out_ptr"] = f"*{dtype}"
    cx = {"POOL": _POOL[scale], "UPS": _UPS[scale], "BLOCK_P": cfg.block_p, "BLOCK_K": cfg.block_k,
          "BLOCK_C": cfg.block_c, "EPS": LAYER_NORM_EPS, "PREC": _precision(tdt, False),
          "PROLOGUE_ONLY": False, "DOT_F32": False}
    sig.update({k: "constexpr" for k in cx})
    return {"fn": _pyramid_stage1_kernel, "signature": sig, "constexprs": cx,
            "grid": "(B*T, cdiv(HS*HS, BLOCK_P))",
            "options": {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}}


def stage2_aot_spec(dtype: str = "bf16", channels: int = 512) -> dict:
    """ASTSource inputs for `_pyramid_stage2_kernel` (the 3x3 conv + LN into the sequence)."""
    cfg, tdt = _aot_config(dtype, channels)
    sig = {"s_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "bias_ptr": "*fp32", "lnw_ptr": "*fp32",
           "lnb_ptr": "*fp32"}
    sig.update({k: "i32" for k in ("T", "H", "C", "sob", "sol", "soc", "level_base", "frame_stride")})
    sig["out_ptr"] = f"*{dtype}"
    cx = {"BLOCK_P": cfg.block_p, "BLOCK_K": cfg.block_k, "BLOCK_C": cfg.block_c, "EPS": LAYER_NORM_EPS,
          "PREC": _precision(tdt, False), "DOT_F32": False}
    sig.update({k: "constexpr" for k in cx})
    return {"fn": _pyramid_stage2_kernel, "signature": sig, "constexprs": cx,
            "grid": "(B*T, cdiv(H*H, BLOCK_P))",
            "options": {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}}


def cls_copy_aot_spec(dtype: str = "bf16", channels: int = 512) -> dict:
    """ASTSource inputs for `_cls_copy_kernel`."""
    cfg, _ = _aot_config(dtype, channels)
    sig = {"x_ptr": f"*{dtype}"}
    sig.update({k: "i32" for k in ("T", "C", "sxb", "sxt", "sxc", "sob", "sol", "soc", "cls_stride")})
    sig["out_ptr"] = f"*{dtype}"
    cx = {"BLOCK_C": min(cfg.block_c, 1024)}
    sig.update({k: "constexpr" for k in cx})
    return {"fn": _cls_copy_kernel, "signature": sig, "constexprs": cx, "grid": "(B*T,)",
            "options": {"num_warps": 4}}


def _stage1_for(scale: float):
    def factory(dtype: str = "bf16", channels: int = 512) -> dict:
        return stage1_aot_spec(dtype, channels, scale)
    factory.__doc__ = f"stage 1 for scale {scale}: " + (stage1_aot_spec.__doc__ or "")
    return factory


# name -> function(dtype="bf16", channels=512) returning {"fn", "signature", "constexprs", "grid", "options"}.
AOT_SPECS = {
    "pyramid_stage1_pool4": _stage1_for(0.25),
    "pyramid_stage1_pool2": _stage1_for(0.5),
    "pyramid_stage1_identity": _stage1_for(1.0),
    "pyramid_stage1_upsample2": _stage1_for(2.0),
    "pyramid_stage2_conv3x3": stage2_aot_spec,
    "pyramid_cls_copy": cls_copy_aot_spec,
}
