"""The C++ bidirectional scan (PyTorch extension) against the loop reference and upstream mamba-ssm.

The extension must build here: a missing compiler or a build error fails these tests, it does not skip."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from muse_tvr.kernels.selective_scan import bidirectional_scan_ref
from muse_tvr.kernels.selective_scan import cpp_scan
from muse_tvr.kernels.selective_scan.cpp_scan import (bidirectional_scan_cpp, cpp_scan_unavailable,
                                                      load_extension)

from helpers import assert_close, upstream_refs

ROOT = Path(__file__).resolve().parents[1]


def direction(b, length, d, n, dtype=torch.float32, delta_scale=0.5, delta_shift=0.0):
    """u, delta, B, C, A, D, bias of one direction."""
    u = torch.randn(b, length, d).to(dtype)
    delta = (delta_scale * torch.randn(b, length, d) + delta_shift).to(dtype)
    B = torch.randn(b, length, n).to(dtype)
    C = torch.randn(b, length, n).to(dtype)
    return u, delta, B, C, -torch.exp(0.5 * torch.randn(d, n)), torch.randn(d), 0.1 * torch.randn(d)


def scan_args(f, bw, z):
    """The 15 arguments of bidirectional_scan_ref in order."""
    return (*f[:4], *bw[:4], z, f[4], bw[4], f[5], bw[5], f[6], bw[6])


def test_extension_loads():
    assert cpp_scan_unavailable() is None, cpp_scan_unavailable()


@pytest.mark.parametrize("b,length,d,n", [(1, 1, 16, 16), (3, 37, 24, 16), (1, 37, 7, 5), (3, 1, 7, 5),
                                          (1, 64, 32, 16), (3, 37, 24, 5)], ids=lambda v: str(v))
def test_matches_reference_fp32(b, length, d, n):
    args = scan_args(direction(b, length, d, n), direction(b, length, d, n), torch.randn(b, length, d))
    got = bidirectional_scan_cpp(*args)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert_close(got, bidirectional_scan_ref(*args), 1e-5, 1e-5, name="cpp vs ref")


@pytest.mark.parametrize("dtype,ulp", [(torch.float16, 2.0 ** -10), (torch.bfloat16, 2.0 ** -7)],
                         ids=["fp16", "bf16"])
def test_half_inputs_keep_dtype(dtype, ulp):
    # The kernel runs in float32 on the upcast inputs and rounds once at the end, so it is the float32
    # reference on the same inputs to within one output ulp (the half reference also rounds y_f and y_b).
    args = scan_args(direction(3, 37, 24, 16, dtype), direction(3, 37, 24, 16, dtype),
                     torch.randn(3, 37, 24).to(dtype))
    got = bidirectional_scan_cpp(*args)
    assert got.dtype == dtype
    want = bidirectional_scan_ref(*(a.float() for a in args))
    assert_close(got, want, 1e-4, ulp, name=str(dtype))
    assert_close(got, bidirectional_scan_ref(*args), 1e-2, 8 * ulp, name=f"{dtype} vs half reference")


def test_strided_views():
    b, length, d, n, r = 3, 37, 24, 5, 3
    xz = torch.randn(b, length, 2 * d)
    xd_f, xd_b = torch.randn(b, length, r + 2 * n), torch.randn(b, length, r + 2 * n)
    delta_t = torch.randn(b, d, length).transpose(1, 2)  # (B, L, D) with L innermost in memory
    f, bw = list(direction(b, length, d, n)), list(direction(b, length, d, n))
    f[0], f[1], f[2], f[3] = xz[..., :d], delta_t, xd_f[..., r:r + n], xd_f[..., r + n:]
    bw[0], bw[2], bw[3] = xz[..., :d].flip(1), xd_b[..., r:r + n], xd_b[..., r + n:]
    f[4] = torch.randn(n, d).t().neg().exp().neg()  # A as a transposed view
    args = scan_args(f, bw, xz[..., d:])
    assert not args[8].is_contiguous() and not args[2].is_contiguous() and not args[1].is_contiguous()
    assert_close(bidirectional_scan_cpp(*args), bidirectional_scan_ref(*args), 1e-5, 1e-5, name="views")


@pytest.mark.parametrize("shift", [25.0, 20.0, -30.0, -80.0], ids=lambda v: f"delta{v:+g}")
def test_softplus_extremes(shift):
    # Above 20 softplus is the identity; very negative delta gives dt ~ exp(delta), decay ~ 1.
    f = direction(2, 21, 24, 16, delta_scale=2.0, delta_shift=shift)
    bw = direction(2, 21, 24, 16, delta_scale=2.0, delta_shift=shift)
    args = scan_args(f, bw, torch.randn(2, 21, 24))
    ref = bidirectional_scan_ref(*args)
    assert torch.isfinite(ref).all()
    assert_close(bidirectional_scan_cpp(*args), ref, 1e-5, 2e-5, name=f"delta shift {shift}")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "bwd"])
def test_each_direction_matches_upstream(reverse):
    """One direction at a time (the other has u = 0 and D = 0, so it adds exactly zero) against mamba-ssm's
    selective_scan_ref, which is (B, D, L) and forward-only: the backward one runs on flipped inputs."""
    up_scan, _ = upstream_refs()
    b, length, d, n = 2, 45, 24, 16
    live = direction(b, length, d, n)
    dead = list(direction(b, length, d, n))
    dead[0], dead[5] = torch.zeros(b, length, d), torch.zeros(d)
    z = torch.randn(b, length, d)
    args = scan_args(dead, live, z) if reverse else scan_args(live, dead, z)
    u, delta, B, C, A, D, bias = live
    if reverse:
        u, delta, B, C, zz = u.flip(1), delta.flip(1), B.flip(1), C.flip(1), z.flip(1)
    else:
        zz = z
    up = up_scan(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
                 zz.transpose(1, 2), bias, True).transpose(1, 2)
    if reverse:
        up = up.flip(1)
    assert_close(bidirectional_scan_cpp(*args), up, 2e-5, 1e-5, name="vs mamba-ssm")


def test_bad_shapes_raise_value_error():
    good = scan_args(direction(2, 9, 8, 4), direction(2, 9, 8, 4), torch.randn(2, 9, 8))
    bad = {2: torch.randn(2, 9, 5), 5: torch.randn(2, 8, 8), 6: torch.randn(2, 9, 3), 8: torch.randn(2, 9, 7),
           10: torch.randn(8, 5), 11: torch.randn(7), 14: torch.randn(9), 0: torch.randn(9, 8)}
    for i, t in bad.items():
        args = list(good)
        args[i] = t
        with pytest.raises(ValueError):
            bidirectional_scan_cpp(*args)
    wide = scan_args(direction(1, 3, 8, 65), direction(1, 3, 8, 65), torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="N must be"):
        bidirectional_scan_cpp(*wide)


def test_cached_build_outside_repo_and_not_rebuilt():
    mod = load_extension()
    assert load_extension() is mod
    so = Path(mod.__file__).resolve()
    assert ROOT not in so.parents, f"extension built inside the checkout: {so}"
    assert so.parent.parent.name == "torch-ext" and torch.__version__ in so.parent.name
    # A fresh process finds the build in the cache: no build line, and it loads the same file.
    code = ("from muse_tvr.kernels.selective_scan.cpp_scan import load_extension as l; "
            "print(l().__file__)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert "building the C++ scan" not in res.stderr
    assert Path(res.stdout.strip()).resolve() == so


def test_cache_location_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MUSE_TVR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpp_scan._build_dir([]).parents[1] == tmp_path / "xdg" / "muse-tvr"
    monkeypatch.setenv("MUSE_TVR_CACHE", str(tmp_path / "mine"))
    assert cpp_scan._build_dir([]).parents[1] == tmp_path / "mine"
    assert cpp_scan._build_dir(["-march=x86-64-v2"]) != cpp_scan._build_dir(["-march=x86-64-v3"])


def test_missing_compiler_is_a_one_line_runtime_error(monkeypatch):
    monkeypatch.setattr(cpp_scan, "_module", None)
    monkeypatch.setattr(cpp_scan, "_error", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler") as info:
        load_extension()
    assert "\n" not in str(info.value)
    assert cpp_scan_unavailable() == str(info.value)  # the failure is remembered, not retried


def test_result_does_not_depend_on_thread_count():
    # Items write disjoint outputs and each runs the same float operations, so any split is bit-identical.
    args = scan_args(direction(2, 30, 40, 16), direction(2, 30, 40, 16), torch.randn(2, 30, 40))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = bidirectional_scan_cpp(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, bidirectional_scan_cpp(*args))
