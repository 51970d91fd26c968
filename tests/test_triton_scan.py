"""The fused bidirectional Triton scan (interpreter on CPU) against `bidirectional_scan_ref` and against
mamba-ssm's `selective_scan_ref` run twice (forward, and backward through flips)."""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close, upstream_refs
from muse_tvr.kernels.selective_scan import bidirectional_scan_ref, selective_scan_ref
from muse_tvr.kernels.selective_scan import triton_scan as tsk
from muse_tvr.kernels.selective_scan.triton_scan import (MIN_CHUNK, bidirectional_scan_triton,
                                                         choose_variant)

# (B, L, D, N, BLOCK_D): L = 1, 2, 3, odd and even L with odd and even halves, D not a multiple of
# BLOCK_D, N = 16, 8, 4 and 12 (not a power of two), batch 1 and > 1. The interpreter costs ~10 ms per
# program-step here, so programs x L stays under ~100 per case.
SHAPES = [(1, 1, 8, 16, 16), (1, 2, 8, 16, 16), (1, 3, 8, 16, 8), (2, 17, 24, 16, 16), (1, 33, 40, 8, 32),
          (3, 6, 7, 4, 8), (1, 13, 16, 12, 16)]
# fp32: summation order only. fp16/bf16: both the kernel and the reference round y_f, y_b and the result
# to the I/O dtype, so the error scales with |y_f| + |y_b| (the sum may cancel), not with the result; the
# interpreter also truncates fp32 -> bf16 where a GPU rounds. Allowed: ULPS units of the dtype's epsilon
# times that scale (see `assert_close_lowp`).
TOL = {torch.float32: (2e-5, 1e-4)}
EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
ULPS = 1.0
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def shape_id(s):
    return "B{}-L{}-D{}-N{}-BD{}".format(*s)


def scan_inputs(b, length, d, n, dtype):
    """The 15 arguments of bidirectional_scan_ref, in a realistic range (dt around softplus(0))."""
    def seq(*shape, scale=1.0):
        return (scale * torch.randn(*shape)).to(dtype)
    return (seq(b, length, d), seq(b, length, d, scale=0.5), seq(b, length, n), seq(b, length, n),
            seq(b, length, d), seq(b, length, d, scale=0.5), seq(b, length, n), seq(b, length, n),
            seq(b, length, d),
            -torch.rand(d, n) - 0.1, -torch.rand(d, n) - 0.1, torch.randn(d), torch.randn(d),
            0.5 * torch.randn(d), 0.5 * torch.randn(d))


def assert_close_matches(out, args, name):
    """Compare with bidirectional_scan_ref under the dtype's honest tolerance."""
    expected = bidirectional_scan_ref(*args)
    dtype = args[0].dtype
    if dtype == torch.float32:
        assert_close(out, expected, *TOL[dtype], name)
        return
    # Scale of the rounding error: the two directions before they are summed, gated, and the result.
    wide = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
    y_f = selective_scan_ref(wide[0], wide[1], wide[9], wide[2], wide[3], wide[11], None, wide[13], True)
    y_b = selective_scan_ref(wide[4], wide[5], wide[10], wide[6], wide[7], wide[12], None, wide[14], True,
                             reverse=True)
    scale = (y_f.abs() + y_b.abs()) * F.silu(wide[8]).abs() + expected.float().abs()
    err = (out.float() - expected.float()).abs()
    bound = ULPS * EPS[dtype] * scale + 1e-6
    assert bool((err <= bound).all()), (
        f"{name}: {int((err > bound).sum())} of {err.numel()} beyond {ULPS} ulps; max err {err.max():.3e}, "
        f"max err/bound {(err / bound).max():.2f}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_sequential_matches_reference(shape, dtype):
    *dims, block_d = shape
    args = scan_inputs(*dims, dtype)
    out = bidirectional_scan_triton(*args, variant="sequential", block_d=block_d)
    assert out.dtype == dtype and out.shape == args[0].shape
    assert_close_matches(out, args, "sequential scan")


# chunk sizes that do not divide L, one chunk of length 1 at the end, chunks of 1 and 2 tokens, a chunk
# longer than L.
CHUNKED = [((2, 17, 24, 16, 16), 5), ((1, 33, 40, 8, 32), 8), ((1, 9, 8, 16, 8), 16), ((1, 7, 8, 16, 8), 1),
           ((1, 7, 8, 16, 8), 2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape,chunk", CHUNKED, ids=lambda c: shape_id(c) if isinstance(c, tuple) else f"chunk{c}")
def test_chunked_matches_sequential_and_reference(shape, chunk, dtype):
    *dims, block_d = shape
    args = scan_inputs(*dims, dtype)
    chunked = bidirectional_scan_triton(*args, variant="chunked", chunk_size=chunk, block_d=block_d)
    assert_close_matches(chunked, args, "chunked vs reference")
    if dtype == torch.float32:
        seq = bidirectional_scan_triton(*args, variant="sequential", block_d=block_d)
        assert_close(chunked, seq, 1e-5, 1e-4, "chunked vs sequential")


@pytest.mark.parametrize("shape", [(2, 17, 24, 16, 16), (1, 8, 12, 8, 16)], ids=shape_id)
def test_matches_upstream_twice_with_flips(shape):
    """What mamba-ssm users do: two selective_scan calls, the backward one on flipped copies."""
    upstream_scan, _ = upstream_refs()
    *dims, block_d = shape
    (u_f, dl_f, B_f, C_f, u_b, dl_b, B_b, C_b, z, A_f, A_b, D_f, D_b, bias_f, bias_b) = args = \
        scan_inputs(*dims, torch.float32)
    t = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731  (B, L, X) -> upstream (B, X, L)
    f = lambda x: t(x.flip(1))  # noqa: E731
    y_f = upstream_scan(t(u_f), t(dl_f), A_f, t(B_f), t(C_f), D_f, None, bias_f, delta_softplus=True)
    y_b = upstream_scan(f(u_b), f(dl_b), A_b, f(B_b), f(C_b), D_b, None, bias_b, delta_softplus=True)
    expected = (y_f.transpose(1, 2) + y_b.flip(-1).transpose(1, 2)) * F.silu(z)
    out = bidirectional_scan_triton(*args, variant="sequential", block_d=block_d)
    assert_close(out, expected, 2e-5, 1e-4, "vs upstream selective_scan_ref x2 + flips")


def test_one_direction_alone():
    """With the other direction's input zeroed (u = 0, D = 0), each direction equals its own scan:
    catches a kernel that mixes up which direction walks which way."""
    args = list(scan_inputs(1, 11, 8, 16, torch.float32))
    for zero_u, zero_d in ((4, 12), (0, 11)):  # silence backward, then forward
        a = list(args)
        a[zero_u] = torch.zeros_like(a[zero_u])
        a[zero_d] = torch.zeros_like(a[zero_d])
        assert_close(bidirectional_scan_triton(*a, variant="sequential"), bidirectional_scan_ref(*a),
                     2e-5, 1e-4, f"single direction (zeroed arg {zero_u})")


def test_reads_strided_views_in_place():
    """In the model B, C come from slices of x_proj's output and z from in_proj's: row-strided views."""
    b, length, d, n = 2, 7, 12, 8
    args = list(scan_inputs(b, length, d, n, torch.float32))
    xz = torch.randn(b, length, 2 * d)
    xd = torch.randn(b, length, 4 + 2 * n)
    args[8] = xz[..., d:]
    args[2], args[3] = xd[..., 4:4 + n], xd[..., 4 + n:]
    out = bidirectional_scan_triton(*args, variant="sequential")
    assert_close(out, bidirectional_scan_ref(*[a.contiguous() for a in args]), 2e-5, 1e-4, "strided")


def test_bc_layouts():
    """16-bit activations with float32 B/C, B/C packed in one row (x_proj's layout: C after B), B/C rows
    not on a vector boundary, and B/C of different dtypes in the two directions."""
    b, length, d, n = 2, 9, 24, 16
    args = list(scan_inputs(b, length, d, n, torch.bfloat16))
    wide = list(args)
    for i in (2, 3, 6, 7):
        wide[i] = args[i].float()
    assert_close_matches(bidirectional_scan_triton(*wide), wide, "bf16 + fp32 B/C")
    f32 = list(scan_inputs(b, length, d, n, torch.float32))
    for shift, (ib, ic) in ((0, (2, 3)), (3, (6, 7))):
        xd = torch.randn(b, length, shift + 2 * n)
        f32[ib], f32[ic] = xd[..., shift:shift + n], xd[..., shift + n:]
    assert tsk.packed(f32[2], f32[3], f32[2], f32[3]) and not tsk.aligned([f32[6]], 4)
    assert_close(bidirectional_scan_triton(*f32), bidirectional_scan_ref(*[a.contiguous() for a in f32]),
                 2e-5, 1e-4, "packed / unaligned")
    mixed = list(f32)
    mixed[6], mixed[7] = f32[6].half(), f32[7].half()
    assert_close(bidirectional_scan_triton(*mixed), bidirectional_scan_ref(*[a.float().contiguous() for a in mixed]),
                 2e-5, 1e-4, "mixed B/C dtypes")


def test_softplus_threshold_and_optional_params():
    args = list(scan_inputs(1, 5, 8, 4, torch.float32))
    args[1] = args[1] + 30.0  # dt above the softplus threshold: used as is
    for i in (11, 12, 13, 14):
        args[i] = None
    ref_args = args[:11] + [torch.zeros(8)] * 4
    out = bidirectional_scan_triton(*args, variant="sequential")
    assert_close(out, bidirectional_scan_ref(*ref_args), 1e-4, 1e-4, "threshold / None params")


def test_rejects_bad_input():
    args = list(scan_inputs(1, 4, 8, 4, torch.float32))
    bad = list(args)
    bad[1] = args[1][:, :3]
    with pytest.raises(ValueError, match="delta_f"):
        bidirectional_scan_triton(*bad)
    bad = list(args)
    bad[6] = args[6][..., :2]
    with pytest.raises(ValueError, match="B_b"):
        bidirectional_scan_triton(*bad)
    bad = list(args)
    bad[10] = args[10][:4]
    with pytest.raises(ValueError, match="A_b"):
        bidirectional_scan_triton(*bad)
    with pytest.raises(ValueError, match="variant"):
        bidirectional_scan_triton(*args, variant="parallel")
    bad = list(args)
    bad[8] = args[8].double()
    with pytest.raises(ValueError, match="z must be float32"):
        bidirectional_scan_triton(*bad)


def test_empty_sequence_returns_empty():
    args = scan_inputs(2, 0, 8, 4, torch.float32)
    assert bidirectional_scan_triton(*args).shape == (2, 0, 8)


def test_variant_heuristic():
    # MUSE's benchmark shape: 16 x 32 programs of one warp = 512 warps, one per scheduler of 132 SMs.
    assert choose_variant(16, 512, 3060, 16, sm_count=132) == ("sequential", 3060)
    # One video: 32 warps; 16 chunks of >= MIN_CHUNK tokens fill the schedulers.
    variant, chunk = choose_variant(1, 512, 3060, 16, sm_count=132)
    assert variant == "chunked" and MIN_CHUNK <= chunk < 3060
    n_chunks = -(-3060 // chunk)
    assert n_chunks == 16 and 32 * n_chunks <= 4 * 132
    # Fewer than 3 chunks cannot pay for the doubled walk: B = 8 stays sequential.
    assert choose_variant(8, 512, 3060, 16, sm_count=132) == ("sequential", 3060)
    # Too short to be worth chunking.
    assert choose_variant(1, 64, 100, 16, sm_count=132) == ("sequential", 100)


def test_tile_and_block_rules():
    assert tsk.tile_n(16) == (4, 4) and tsk.tile_n(12) == (4, 4) and tsk.tile_n(4) == (1, 4)
    assert tsk.tile_n(1) == (1, 1) and tsk.num_warps_for(16) == 1 and tsk.num_warps_for(64) == 4
    x = torch.zeros(2, 5, 16)
    assert tsk.aligned([x], 4) and not tsk.aligned([x[..., 1:13]], 4)
    args = scan_inputs(1, 4, 8, 4, torch.float32)
    with pytest.raises(ValueError, match="power of two"):
        bidirectional_scan_triton(*args, block_d=12)
