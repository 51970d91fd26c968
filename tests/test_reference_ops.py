"""The plain reference ops against upstream's own references (mamba-ssm, causal-conv1d)."""
import pytest
import torch

from helpers import assert_close, upstream_refs
from muse_tvr.kernels.causal_conv import causal_conv1d_ref
from muse_tvr.kernels.selective_scan import bidirectional_scan_ref, selective_scan_ref

SCAN_SHAPES = [(1, 1, 8, 16), (2, 17, 33, 16), (1, 64, 40, 8), (3, 5, 7, 4)]
TOL = {torch.float32: (2e-5, 1e-4), torch.float16: (5e-3, 3e-3), torch.bfloat16: (5e-2, 3e-2)}


def scan_inputs(b, length, d, n, dtype):
    u = torch.randn(b, length, d).to(dtype)
    delta = (0.5 * torch.randn(b, length, d)).to(dtype)
    A = -torch.rand(d, n) - 0.1
    Bm = torch.randn(b, length, n).to(dtype)
    Cm = torch.randn(b, length, n).to(dtype)
    D = torch.randn(d)
    z = torch.randn(b, length, d).to(dtype)
    bias = torch.randn(d) * 0.5
    return u, delta, A, Bm, Cm, D, z, bias


def _t(x):  # (B, L, X) -> upstream's (B, X, L)
    return x.transpose(1, 2).contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=lambda s: "B{}-L{}-D{}-N{}".format(*s))
def test_selective_scan_matches_upstream(shape, dtype):
    upstream_scan, _ = upstream_refs()
    u, delta, A, Bm, Cm, D, z, bias = scan_inputs(*shape, dtype)
    ours = selective_scan_ref(u, delta, A, Bm, Cm, D, z, bias, delta_softplus=True)
    theirs = upstream_scan(_t(u), _t(delta), A, _t(Bm), _t(Cm), D, _t(z), bias, delta_softplus=True)
    atol, rtol = TOL[dtype]
    assert_close(ours.float(), _t(theirs).float(), atol, rtol, "scan vs upstream")


@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=lambda s: "B{}-L{}-D{}-N{}".format(*s))
def test_reverse_scan_is_flipped_upstream(shape):
    upstream_scan, _ = upstream_refs()
    u, delta, A, Bm, Cm, D, z, bias = scan_inputs(*shape, torch.float32)
    ours = selective_scan_ref(u, delta, A, Bm, Cm, D, z, bias, delta_softplus=True, reverse=True)
    f = lambda x: _t(x.flip(1))  # noqa: E731
    theirs = upstream_scan(f(u), f(delta), A, f(Bm), f(Cm), D, f(z), bias, delta_softplus=True)
    assert_close(ours, _t(theirs).flip(1), 2e-5, 1e-4, "reverse scan vs flipped upstream")


def test_bidirectional_scan_sums_directions_then_gates():
    u, delta, A, Bm, Cm, D, z, bias = scan_inputs(2, 9, 6, 4, torch.float32)
    u2, delta2, A2, B2, C2, D2, _, bias2 = scan_inputs(2, 9, 6, 4, torch.float32)
    got = bidirectional_scan_ref(u, delta, Bm, Cm, u2, delta2, B2, C2, z, A, A2, D, D2, bias, bias2)
    y_f = selective_scan_ref(u, delta, A, Bm, Cm, D, None, bias, True)
    y_b = selective_scan_ref(u2, delta2, A2, B2, C2, D2, None, bias2, True, reverse=True)
    assert_close(got, (y_f + y_b) * torch.nn.functional.silu(z), 1e-6, 1e-6, "bidirectional")


def test_softplus_threshold_matches_mamba():
    # delta + bias above 20 passes through unchanged; below it is log1p(exp(.)).
    u = torch.ones(1, 2, 1)
    delta = torch.tensor([[[25.0], [0.3]]])
    A = torch.zeros(1, 1)
    B = torch.ones(1, 2, 1)
    C = torch.ones(1, 2, 1)
    y = selective_scan_ref(u, delta, A, B, C, delta_softplus=True)
    # With A = 0 the state accumulates dt * u * B: y_0 = 25, y_1 = 25 + softplus(0.3).
    sp = torch.log1p(torch.exp(torch.tensor(0.3)))
    assert_close(y.flatten(), torch.stack([torch.tensor(25.0), 25.0 + sp]), 1e-5, 0, "softplus")


def test_scan_rejects_bad_shapes():
    u, delta, A, Bm, Cm, D, z, bias = scan_inputs(1, 4, 6, 4, torch.float32)
    with pytest.raises(ValueError, match="delta"):
        selective_scan_ref(u, delta[:, :3], A, Bm, Cm)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_ref(u, delta, A, Bm[..., :2], Cm)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("b,length,d", [(1, 1, 5), (2, 13, 33), (1, 40, 64)])
def test_causal_conv_matches_upstream(b, length, d, width, dtype):
    _, upstream_conv = upstream_refs()
    x = torch.randn(b, length, d).to(dtype)
    w = torch.randn(d, width).to(dtype)
    bias = torch.randn(d).to(dtype)
    ours = causal_conv1d_ref(x, w, bias, activation="silu")
    theirs = upstream_conv(_t(x), w, bias, activation="silu")
    atol, rtol = TOL[dtype]
    assert_close(ours.float(), _t(theirs).float(), atol, rtol, "conv vs upstream")
    # Anti-causal: the upstream causal conv over the reversed sequence, reversed back.
    ours_b = causal_conv1d_ref(x, w, bias, activation="silu", reverse=True)
    theirs_b = upstream_conv(_t(x.flip(1)), w, bias, activation="silu")
    assert_close(ours_b.float(), _t(theirs_b).flip(1).float(), atol, rtol, "anti-causal conv")


def test_anticausal_conv_formula():
    # y_t = sum_k w[k] x[t + W-1-k]: check one position by hand.
    x = torch.arange(1.0, 7.0).view(1, 6, 1)
    w = torch.tensor([[1.0, 10.0, 100.0]])
    y = causal_conv1d_ref(x, w, None, activation=None, reverse=True)
    # t = 1: w0*x3 + w1*x2 + w2*x1 = 4 + 30 + 200
    assert y[0, 1, 0].item() == 234.0
    # the last position sees only itself through w[W-1]
    assert y[0, 5, 0].item() == 600.0
