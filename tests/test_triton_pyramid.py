"""Fused Triton pyramid (muse_tvr.kernels.pyramid) against its reference, under the CPU interpreter.

Shapes are small (C = 32/48, T <= 3, B <= 2) because the interpreter runs programs one by one. Exact
comparisons: the CLS rows (copies) and the resampling prologue (max pool / gather). Everything after a
GEMM is compared to the fp32 reference at fp32 tolerance; fp16/bf16 runs are compared to the same fp32
reference with tolerances that account for rounding the stored activations (and, for bf16, the
interpreter's truncating fp32 -> bf16 casts: GPUs round to nearest even, so a GPU is at least as close).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close
from muse_tvr.engine.config import TINY, HeadConfig, VisionConfig
from muse_tvr.engine.pyramid import FeaturePyramid
from muse_tvr.kernels.pyramid import pyramid_sequence_ref
from muse_tvr.kernels.pyramid import triton_pyramid as tp


def pyramid_prologue_triton(tokens: torch.Tensor, scale: float) -> torch.Tensor:
    """Stage 1 launched in its PROLOGUE_ONLY mode: tokens (B, T, 1+g*g, C) -> the (B*T, h, h, C) map the 1x1 GEMM would see (max pool for 0.5/0.25, the map for 1.0, each source
    pixel repeated 2x2 for 2.0, whose ConvT is folded into the GEMM weights)."""
    if scale not in tp.FUSED_SCALES:
        raise ValueError(f"scale {scale} has no fused prologue; fused scales are {tp.FUSED_SCALES}")
    b, t, n, c = tokens.shape
    g = math.isqrt(n - 1)
    h = tp.scale_grid(g, scale)
    ups = tp._UPS[scale]
    hs = h // ups
    cfg = tp.launch_config(c, tokens.dtype)
    out = torch.empty(b * t, h, h, c, dtype=tokens.dtype, device=tokens.device)
    dummy = torch.empty(1, dtype=tokens.dtype, device=tokens.device)
    tp._pyramid_stage1_kernel[(b * t, tp.triton.cdiv(hs * hs, cfg.block_p))](
        tokens, dummy, dummy, dummy, dummy, t, g, hs, c, *tokens.stride(), out,
        POOL=tp._POOL[scale], UPS=ups, BLOCK_P=cfg.block_p, BLOCK_K=cfg.block_k, BLOCK_C=cfg.block_c,
        EPS=tp.LAYER_NORM_EPS, PREC="ieee", PROLOGUE_ONLY=True, DOT_F32=False)
    return out


def make_pyramid(channels: int, grid: int, scales=(0.5, 1.0, 2.0)) -> FeaturePyramid:
    """A FeaturePyramid for a `grid` x `grid` token map; LN affine perturbed so it is not the identity."""
    pyr = FeaturePyramid(HeadConfig(d_model=channels, scales=tuple(scales)),
                         VisionConfig(output_dim=channels))
    pyr.grid = grid
    with torch.no_grad():
        for name, p in pyr.named_parameters():
            if p.dim() == 1 and ("weight" in name or "bias" in name):
                p.add_(0.1 * torch.randn_like(p))
    return pyr.eval()


def tokens_for(b: int, t: int, grid: int, c: int) -> torch.Tensor:
    return torch.randn(b, t, 1 + grid * grid, c)


def engine_sequence(tokens: torch.Tensor, pyr: FeaturePyramid, order: str = "scale_wise") -> torch.Tensor:
    """The module's forward with the reference backend (its own order replaced by `order`)."""
    pyr.order = order
    with torch.no_grad():
        return pyr(tokens)


# ----- the reference itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["scale_wise", "frame_wise", "spatial_wise"])
def test_reference_equals_engine_pyramid(order):
    pyr = make_pyramid(32, 7)
    tok = tokens_for(2, 3, 7, 32)
    with torch.no_grad():
        ref = pyramid_sequence_ref(tok, pyr, pyr.scales, order)
        from_state = pyramid_sequence_ref(tok, {f"pyramid.{k}": v for k, v in pyr.state_dict().items()},
                                          pyr.scales, order)
    expected = engine_sequence(tok, pyr, order)
    assert torch.equal(ref, expected)
    assert torch.equal(from_state, expected)


def test_reference_all_scales_and_missing_keys():
    scales = (0.25, 0.5, 1.0, 2.0, 4.0)
    pyr = make_pyramid(16, 8, scales)
    tok = tokens_for(1, 2, 8, 16)
    with torch.no_grad():
        assert torch.equal(pyramid_sequence_ref(tok, pyr, scales), engine_sequence(tok, pyr))
    state = {k: v for k, v in pyr.state_dict().items() if "mamba_stages.2.3." not in k}
    with pytest.raises(ValueError, match="mamba_stages.2.3.weight"):
        pyramid_sequence_ref(tok, state, scales)


def test_fold_upsample_equals_convtranspose_then_conv1x1():
    c = 24
    convt = torch.nn.ConvTranspose2d(c, c // 2, 2, stride=2).double()
    conv1 = torch.nn.Conv2d(c // 2, c, 1).double()
    x = torch.randn(2, c, 3, 3, dtype=torch.float64)
    expected = conv1(convt(x))  # (2, C, 6, 6)
    w, bias = tp.fold_upsample(convt.weight, convt.bias, conv1.weight, conv1.bias)
    for a in range(2):
        for b in range(2):
            got = torch.einsum("nkij,kc->ncij", x, w[2 * a + b]) + bias[None, :, None, None]
            assert_close(got, expected[:, :, a::2, b::2], atol=1e-12, name=f"sub-pixel {a}{b}")


# ----- exact parts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("scale,grid", [(0.5, 7), (0.5, 5), (0.25, 9), (1.0, 5), (2.0, 5)])
def test_prologue_is_bit_exact(scale, grid, dtype):
    tok = tokens_for(2, 2, grid, 48).to(dtype)
    fmap = tok[:, :, 1:].reshape(4, grid, grid, 48).permute(0, 3, 1, 2)
    if scale < 1.0:
        k = round(1 / scale)
        expected = F.max_pool2d(fmap, k, k)
    elif scale == 1.0:
        expected = fmap
    else:  # the ConvT is folded into the GEMM; the prologue repeats each source pixel over its 2x2 block
        expected = fmap.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    got = pyramid_prologue_triton(tok, scale)
    assert torch.equal(got, expected.permute(0, 2, 3, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cls_rows_are_exact_copies(dtype):
    pyr = make_pyramid(32, 5)
    tok = tokens_for(2, 3, 5, 32).to(dtype)
    out = tp.pyramid_sequence_triton(tok, pyr, pyr.scales)
    assert out.dtype == dtype
    assert torch.equal(out[:, :3], tok[:, :, 0])


# ----- whole sequence, fp32 ---------------------------------------------------------------------------
@pytest.mark.parametrize("b,t,grid,c,order", [
    (1, 3, 7, 32, "scale_wise"),
    (2, 1, 5, 48, "scale_wise"),   # odd small grid (pool 5 -> 2), C not a power of two
    (2, 2, 7, 48, "frame_wise"),
], ids=lambda v: str(v))
def test_fused_sequence_fp32(b, t, grid, c, order):
    pyr = make_pyramid(c, grid)
    tok = tokens_for(b, t, grid, c)
    out = tp.pyramid_sequence_triton(tok, pyr, pyr.scales, order)
    ref = pyramid_sequence_ref(tok, pyr, pyr.scales, order)
    assert out.shape == ref.shape
    assert_close(out, ref, atol=1e-4, rtol=1e-4, name=f"fused vs reference ({order})")


def test_fused_sequence_grid14_strided_tokens():
    """ViT-B/16 geometry (14x14 -> 7, 14, 28), from a non-contiguous view of the tokens."""
    pyr = make_pyramid(32, 14)
    base = torch.randn(1, 2, 197, 64)
    tok = base[:, 1:, :, ::2]  # strides in every dim: the kernels read through them, no copy
    assert not tok.is_contiguous()
    out = tp.pyramid_sequence_triton(tok, pyr, pyr.scales)
    ref = pyramid_sequence_ref(tok.contiguous(), pyr, pyr.scales)
    assert out.shape == (1, 1 + 49 + 196 + 784, 32)
    assert_close(out, ref, atol=1e-4, rtol=1e-4, name="grid 14")


# ----- half precision ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 1e-2), (torch.bfloat16, 8e-2)], ids=str)
def test_fused_sequence_half(dtype, atol):
    pyr = make_pyramid(48, 7)
    tok = tokens_for(1, 2, 7, 48)
    ref = pyramid_sequence_ref(tok, pyr, pyr.scales)  # fp32 truth
    out = tp.pyramid_sequence_triton(tok.to(dtype), pyr.to(dtype), pyr.scales)
    assert out.dtype == dtype
    # LN outputs are O(1..4): fp16 ulp there is <= 4e-3, bf16 <= 3e-2 (truncated under the interpreter),
    # plus the rounding of the stored intermediate and the inputs.
    assert_close(out.float(), ref, atol=atol, rtol=0.0, name=str(dtype))
    # The eager pyramid run in the same dtype is no closer to fp32 than the fused one by much.
    eager = engine_sequence(tok.to(dtype), pyr).float()
    fused_err = (out.float() - ref).abs().mean().item()
    eager_err = (eager - ref).abs().mean().item()
    assert fused_err <= 2.0 * eager_err + 1e-3, (fused_err, eager_err)


# ----- fallbacks --------------------------------------------------------------------------------------
def test_unfused_scale_and_order_fall_back_with_warning():
    scales = (1.0, 4.0)
    pyr = make_pyramid(16, 3, scales)
    tok = tokens_for(1, 2, 3, 16)
    with pytest.warns(UserWarning, match="scale 4.0 is not fused"):
        out = tp.pyramid_sequence_triton(tok, pyr, scales)
    assert_close(out, pyramid_sequence_ref(tok, pyr, scales), atol=1e-4, rtol=1e-4, name="4.0 fallback")
    with pytest.warns(UserWarning, match="spatial_wise"):
        out = tp.pyramid_sequence_triton(tok, pyr, scales, "spatial_wise")
    assert torch.equal(out, pyramid_sequence_ref(tok, pyr, scales, "spatial_wise"))


# ----- bad input --------------------------------------------------------------------------------------
def test_bad_inputs_raise_value_error():
    pyr = make_pyramid(32, 5)
    pack = tp.pack_pyramid(pyr, pyr.scales, torch.float32, "cpu")
    good = tokens_for(1, 1, 5, 32)
    cases = {
        "3-D": (good[0], "shape"),
        "not square": (torch.randn(1, 1, 25, 32), "square"),
        "channels": (tokens_for(1, 1, 5, 16), "channels"),
        "dtype": (good.half(), "dtype"),
        "grid too small to pool": (tokens_for(1, 1, 1, 32), "patch grid"),
        "empty batch": (torch.randn(0, 1, 26, 32), "at least one"),
    }
    for what, (tok, match) in cases.items():
        with pytest.raises(ValueError, match=match):
            tp.fused_pyramid_sequence(tok, pack)
    with pytest.raises(ValueError, match="order"):
        tp.fused_pyramid_sequence(good, pack, order="diagonal")
    with pytest.raises(ValueError, match="out must be"):
        tp.fused_pyramid_sequence(good, pack, out=torch.empty(1, 10, 32))
    with pytest.raises(ValueError, match="float32/float16/bfloat16"):
        tp.pyramid_sequence_triton(good.long(), pyr, pyr.scales)
    with pytest.raises(ValueError, match="supports"):
        tp.pack_pyramid(pyr, pyr.scales, torch.float64, "cpu")


# ----- the engine's op: packed weights derived once per module ------------------------------------------
def test_triton_op_on_a_module_packs_once_and_refreshes():
    from muse_tvr.kernels.pyramid import pyramid_sequence_triton

    pyr = make_pyramid(16, 7)
    tok = tokens_for(1, 2, 7, 16)
    calls = []
    real = tp.pack_pyramid
    try:
        tp.pack_pyramid = lambda *a, **k: calls.append(1) or real(*a, **k)
        out = pyramid_sequence_triton(tok, pyr, pyr.scales, "scale_wise", pyr.eps)
        want = pyramid_sequence_ref(tok, pyr, pyr.scales)
        pyramid_sequence_triton(tok, pyr, pyr.scales, "scale_wise", pyr.eps)
        assert len(calls) == 1  # reused
        with torch.no_grad():
            pyr.mamba_stages[1][0].bias.add_(1.0)  # in place: the cache must notice
        again = pyramid_sequence_triton(tok, pyr, pyr.scales, "scale_wise", pyr.eps)
        assert len(calls) == 2
    finally:
        tp.pack_pyramid = real
    assert_close(out, want, 1e-4, 1e-4, "fused")
    assert_close(again, pyramid_sequence_ref(tok, pyr, pyr.scales), 1e-4, 1e-4, "after weight change")
