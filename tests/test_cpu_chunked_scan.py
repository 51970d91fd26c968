"""The blocked CPU scan against the loop reference, upstream mamba-ssm, and the whole head."""
import pytest
import torch

from muse_tvr.engine.config import HeadConfig
from muse_tvr.engine.mamba import MuseHead
from muse_tvr.kernels.selective_scan import bidirectional_scan_ref, selective_scan_ref
from muse_tvr.kernels.selective_scan.cpu_chunked import (bidirectional_scan_chunked,
                                                         selective_scan_chunked)

from helpers import assert_close, upstream_refs


def inputs(b, length, d, n, dtype=torch.float32):
    u = torch.randn(b, length, d, dtype=dtype)
    delta = (0.5 * torch.randn(b, length, d)).to(dtype)
    A = -torch.exp(torch.randn(d, n) * 0.5)
    B = torch.randn(b, length, n, dtype=dtype)
    C = torch.randn(b, length, n, dtype=dtype)
    return u, delta, A, B, C, torch.randn(d), torch.randn(b, length, d, dtype=dtype), torch.randn(d)


@pytest.mark.parametrize("b,length,d,n,block", [(1, 1, 8, 16, 32), (2, 63, 20, 16, 8), (1, 100, 16, 4, 7),
                                                 (3, 33, 8, 16, 64), (1, 40, 8, 16, 1)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "bwd"])
def test_matches_loop_reference(b, length, d, n, block, reverse):
    u, delta, A, B, C, D, z, bias = inputs(b, length, d, n)
    ref = selective_scan_ref(u, delta, A, B, C, D, z, bias, True, reverse)
    got = selective_scan_chunked(u, delta, A, B, C, D, z, bias, True, reverse, block=block)
    assert_close(got, ref, 1e-5, 1e-5, name="chunked scan")


def test_matches_upstream_and_keeps_dtype():
    up_scan, _ = upstream_refs()
    u, delta, A, B, C, D, z, bias = inputs(2, 50, 12, 16)
    up = up_scan(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
                 z.transpose(1, 2), bias, True).transpose(1, 2)
    assert_close(selective_scan_chunked(u, delta, A, B, C, D, z, bias, True, block=16), up, 2e-5, 1e-5,
                 name="vs mamba-ssm")
    u16 = u.to(torch.bfloat16)
    assert selective_scan_chunked(u16, delta, A, B, C).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="block"):
        selective_scan_chunked(u, delta, A, B, C, block=0)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_chunked(u, delta, A, B[:, :-1], C)


def test_bidirectional_matches_reference():
    f = inputs(2, 37, 16, 16)
    bw = inputs(2, 37, 16, 16)
    args = (f[0], f[1], f[3], f[4], bw[0], bw[1], bw[3], bw[4], f[6], f[2], bw[2], f[5], bw[5], f[7], bw[7])
    assert_close(bidirectional_scan_chunked(*args, block=10), bidirectional_scan_ref(*args), 2e-5, 1e-5,
                 name="bidirectional")


def test_softplus_threshold_and_extremes_match_reference():
    u, delta, A, B, C, D, z, _ = inputs(1, 8, 6, 16)
    delta = torch.tensor([-80.0, -20.0, 0.0, 19.999, 20.0, 20.001, 30.0, 1.0]).repeat(6, 1).t()[None]
    ref = selective_scan_ref(u, delta, A, B, C, D, z, None, True)
    assert_close(selective_scan_chunked(u, delta, A, B, C, D, z, None, True, block=3), ref, 1e-5, 1e-5,
                 name="softplus edges")
