"""PROTOTYPE v2 scan (muse_tvr/kernels/selective_scan/triton_scan_v2.py, issue 14) under the interpreter
against `bidirectional_scan_ref`: L = 1, odd L, D not a multiple of the 32-channel block, N = 16 and 4,
batch 1 and 2, fp32 and bf16, strided B/C/z views, thresholded softplus and absent optional params."""
import pytest
import torch

from helpers import assert_close
from muse_tvr.kernels.selective_scan import bidirectional_scan_ref
from muse_tvr.kernels.selective_scan.triton_scan_v2 import (aligned, bidirectional_scan_triton_v2, tile_n,
                                                            use_pairs)
from test_triton_scan import assert_close_matches, scan_inputs

# (B, L, D, N); D = 64 runs the EVEN_D (maskless) specialisation
SHAPES = [(1, 1, 24, 16), (2, 13, 24, 16), (1, 13, 40, 4), (2, 6, 8, 16), (1, 5, 24, 12), (1, 7, 64, 16)]


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "noprefetch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-L{}-D{}-N{}".format(*s))
def test_v2_matches_reference(shape, dtype, prefetch):
    args = scan_inputs(*shape, dtype)
    out = bidirectional_scan_triton_v2(*args, prefetch=prefetch)
    assert out.dtype == dtype and out.shape == args[0].shape
    assert_close_matches(out, args, "v2 scan")


def test_v2_one_direction_alone():
    args = list(scan_inputs(1, 11, 8, 16, torch.float32))
    for zero_u, zero_d in ((4, 12), (0, 11)):
        a = list(args)
        a[zero_u] = torch.zeros_like(a[zero_u])
        a[zero_d] = torch.zeros_like(a[zero_d])
        assert_close(bidirectional_scan_triton_v2(*a), bidirectional_scan_ref(*a), 2e-5, 1e-4,
                     f"single direction (zeroed arg {zero_u})")


def test_v2_strided_views_and_optional_params():
    b, length, d, n = 2, 7, 12, 8
    args = list(scan_inputs(b, length, d, n, torch.float32))
    xz = torch.randn(b, length, 2 * d)
    xd = torch.randn(b, length, 3 + 2 * n)  # B at column 3: rows not vector aligned
    args[8] = xz[..., d:]
    args[2], args[3] = xd[..., 3:3 + n], xd[..., 3 + n:]
    args[1] = args[1] + torch.where(torch.rand(b, length, d) < 0.3, 30.0, 0.0)  # some dt above threshold
    assert not aligned([args[2]], tile_n(n)[1])
    ref_args = [a.contiguous() for a in args]
    assert_close(bidirectional_scan_triton_v2(*args), bidirectional_scan_ref(*ref_args), 2e-5, 1e-4, "strided")
    for i in (11, 12, 13, 14):
        args[i] = None
    ref_args = ref_args[:11] + [torch.zeros(d)] * 4
    assert_close(bidirectional_scan_triton_v2(*args), bidirectional_scan_ref(*ref_args), 2e-5, 1e-4,
                 "None params")


def test_v2_tile_and_alignment_rules():
    assert tile_n(16) == (2, 4) and tile_n(4) == (1, 2) and tile_n(1) == (1, 1) and tile_n(12) == (2, 4)
    x = torch.zeros(2, 5, 16)
    assert aligned([x], 4) and not aligned([x[..., 1:13]], 4)
    xb = x.bfloat16()
    assert use_pairs([xb]) and not use_pairs([x]) and not use_pairs([xb[..., 1:13]])
    assert aligned([xb], 4, pairs=True) and not aligned([xb[..., 2:10]], 4, pairs=True)


def test_v2_static_report_one_lane_per_channel():
    """sm_90 SASS of the v2 kernel (compiled in a child process): the walk loops have no shuffles and no
    barriers (each lane owns its channel's states), no spills, and far fewer lane instructions per
    (element, state) than v1's ~71."""
    from muse_tvr.kernels import sass

    entry = next(e for e in sass.other_entries() if e.kernel == "bidirectional_scan_v2")
    k = sass._compile([entry], 90)[0]
    assert not isinstance(k, str), k
    row = sass.analyze(entry, k)
    assert "error" not in row, row["error"]
    assert row["spills"] == 0
    assert [lp["role"] for lp in row["loops"]] == ["walk_first_half", "walk_second_half"]
    for lp in row["loops"]:
        assert lp["shfl"] == 0 and lp["bar"] == 0, lp
    assert row["instr_per_elem_state"] < 16, row["instr_per_elem_state"]


def test_v2_fp16_generic_path():
    args = scan_inputs(2, 9, 24, 16, torch.float16)
    assert_close_matches(bidirectional_scan_triton_v2(*args), args, "v2 scan fp16")


def test_v2_bf16_activations_with_fp32_B_C():
    """bf16 u/dt/z with fp32 B/C (x_proj's fp32 accumulator): the conversion-free B/C path."""
    args = list(scan_inputs(2, 9, 24, 16, torch.bfloat16))
    for i in (2, 3, 6, 7):
        args[i] = args[i].float()
    assert_close_matches(bidirectional_scan_triton_v2(*args), args, "v2 scan bf16 + fp32 B/C")
