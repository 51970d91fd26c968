"""The Triton bidirectional conv kernel (interpreter on CPU) against our reference and causal-conv1d's."""
import pytest
import torch

from helpers import assert_close, upstream_refs
from muse_tvr.kernels.causal_conv import bidirectional_causal_conv_ref, causal_conv1d_ref
from muse_tvr.kernels.causal_conv.triton_conv import bidirectional_causal_conv_triton

# (B, L, D, W): L = 1, odd L, L not a multiple of BLOCK_L, D not a multiple of BLOCK_D, widths 1..4.
SHAPES = [(1, 1, 8, 4), (2, 37, 24, 4), (1, 70, 40, 3), (3, 5, 7, 2), (1, 9, 16, 1)]
# fp32 is exact up to summation order; fp16/bf16 are one output rounding away (bf16: the interpreter
# truncates instead of rounding, so allow 1 ulp = 2^-7 relative).
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def conv_inputs(b, length, d, w, dtype):
    x = torch.randn(b, length, d).to(dtype)
    return x, torch.randn(d, w) * 0.5, torch.randn(d) * 0.1, torch.randn(d, w) * 0.5, torch.randn(d) * 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-L{}-D{}-W{}".format(*s))
def test_conv_matches_reference(shape, dtype):
    x, wf, bf, wb, bb = conv_inputs(*shape, dtype)
    u_f, u_b = bidirectional_causal_conv_triton(x, wf, bf, wb, bb, block_l=16, block_d=16)
    r_f, r_b = bidirectional_causal_conv_ref(x, wf, bf, wb, bb)
    assert u_f.dtype == dtype and u_f.shape == x.shape and u_f.is_contiguous()
    atol, rtol = TOL[dtype]
    assert_close(u_f.float(), r_f.float(), atol, rtol, "forward (causal)")
    assert_close(u_b.float(), r_b.float(), atol, rtol, "backward (anti-causal)")


@pytest.mark.parametrize("shape", [(2, 37, 24, 4), (1, 6, 5, 3)], ids=lambda s: "B{}-L{}-D{}-W{}".format(*s))
def test_conv_matches_upstream(shape):
    _, upstream_conv = upstream_refs()
    x, wf, bf, wb, bb = conv_inputs(*shape, torch.float32)
    u_f, u_b = bidirectional_causal_conv_triton(x, wf, bf, wb, bb)
    xt = x.transpose(1, 2).contiguous()
    up_f = upstream_conv(xt, wf, bf, activation="silu").transpose(1, 2)
    up_b = upstream_conv(xt.flip(-1), wb, bb, activation="silu").flip(-1).transpose(1, 2)
    assert_close(u_f, up_f, 1e-5, 1e-5, "forward vs causal-conv1d")
    assert_close(u_b, up_b, 1e-5, 1e-5, "backward vs flipped causal-conv1d")


def test_conv_reads_row_strided_view():
    # x is the first half of in_proj's (B, L, 2D) output in the model: a view with row stride 2D.
    xz = torch.randn(2, 11, 2 * 12)
    x = xz[..., :12]
    _, wf, bf, wb, bb = conv_inputs(2, 11, 12, 4, torch.float32)
    u_f, u_b = bidirectional_causal_conv_triton(x, wf.unsqueeze(1), bf, wb.unsqueeze(1), bb)
    assert_close(u_f, causal_conv1d_ref(x.contiguous(), wf, bf), 1e-5, 1e-5, "strided forward")
    assert_close(u_b, causal_conv1d_ref(x.contiguous(), wb, bb, reverse=True), 1e-5, 1e-5, "strided backward")


def test_conv_rejects_bad_input():
    x, wf, bf, wb, bb = conv_inputs(1, 4, 6, 4, torch.float32)
    with pytest.raises(ValueError, match="x must be"):
        bidirectional_causal_conv_triton(x[0], wf, bf, wb, bb)
    with pytest.raises(ValueError, match="width"):
        bidirectional_causal_conv_triton(x, torch.randn(6, 5), bf, torch.randn(6, 5), bb)
    with pytest.raises(ValueError, match="w_b"):
        bidirectional_causal_conv_triton(x, wf, bf, wb[:5], bb)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        bidirectional_causal_conv_triton(x.double(), wf, bf, wb, bb)
