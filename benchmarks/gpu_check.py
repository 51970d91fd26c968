"""GPU check of the Triton kernels: correctness against the references, then timings against PyTorch eager
and (where importable) the mamba-ssm / causal-conv1d CUDA kernels, with the percentage of the physical bound.

One command, sized for under 8 minutes on an H100:
    .venv/bin/python benchmarks/gpu_check.py            # full check at MUSE's shape (B 16, L 3060, D 512, N 16, bf16)
    .venv/bin/python benchmarks/gpu_check.py --quick    # smaller shapes, a minute or so
Writes benchmarks/results/gpu_check-<card>-<date>.json and .txt; exits 1 if any kernel is wrong.
Without CUDA it prints a message and exits 0 (for a CPU smoke run of the code paths under the Triton
interpreter: TRITON_INTERPRET=1 ... --device cpu --quick; its timings mean nothing).

Bound (docs/benchmarks.md, "GPU: the scan's bound"): per (b, l, d) element and direction the fused scan needs N exp (MUFU) ops
and moves 8 bytes in bf16; the bidirectional op reads u_f, u_b, dt_f, dt_b, z and writes y (6 tensors)
plus B/C per token. The kernel is judged against max(HBM time, exp time) with the peaks below.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

# H100 SXM5 peaks (the card the targets are set for; `device_peaks` for others, or --hbm-gbs / --exp-tops).
# HBM3: 3.35 TB/s (NVIDIA H100 SXM datasheet).
H100_SXM_HBM_BYTES_PER_S = 3.35e12
H100_SXM_SMS = 132
H100_SXM_BOOST_HZ = 1.98e9
# MUFU ex2: 16 ops/clock/SM (4 per SM sub-partition); H100 SXM: x 132 SMs x 1.98 GHz = 4.18e12 exp/s.
# Triton's tl.exp lowers to a multiply by log2(e) plus ex2.approx, one MUFU op.
MUFU_EXP_PER_CLOCK_PER_SM = 16
H100_SXM_EXP_PER_S = MUFU_EXP_PER_CLOCK_PER_SM * H100_SXM_SMS * H100_SXM_BOOST_HZ

ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
TARGET_SCAN_RATIO = 0.67    # target: <= 0.67x the time of two selective_scan_fn calls plus flips
TARGET_BOUND_FRACTION = 0.70  # target: >= 70% of max(HBM, exp) bound
TARGET_PYRAMID_SPEEDUP = 2.0


# ----------------------------------------------------------------------------------------------------
# Pure arithmetic and arguments (tested on CPU)


def scan_bound(batch: int, length: int, dim: int, d_state: int, dtype: str,
               hbm_bytes_per_s: float = H100_SXM_HBM_BYTES_PER_S,
               exp_per_s: float = H100_SXM_EXP_PER_S) -> dict:
    """Lower bound of the fused bidirectional scan: {"bytes", "exps", "hbm_s", "exp_s", "bound_s", "limit"}."""
    e = ELEMENT_BYTES[dtype]
    elems = batch * length * dim
    nbytes = e * (6 * elems + 4 * batch * length * d_state)   # u_f u_b dt_f dt_b z in, y out; B_f C_f B_b C_b
    exps = 2 * elems * d_state                                  # N exps per element and direction
    hbm_s, exp_s = nbytes / hbm_bytes_per_s, exps / exp_per_s
    return {"bytes": nbytes, "exps": exps, "hbm_s": hbm_s, "exp_s": exp_s, "bound_s": max(hbm_s, exp_s),
            "limit": "exp" if exp_s > hbm_s else "hbm"}


def conv_bound(batch: int, length: int, dim: int, dtype: str,
               hbm_bytes_per_s: float = H100_SXM_HBM_BYTES_PER_S,
               exp_per_s: float = H100_SXM_EXP_PER_S) -> dict:
    """Lower bound of the bidirectional conv: x read once, u_f and u_b written; one exp per output (SiLU)."""
    elems = batch * length * dim
    nbytes = ELEMENT_BYTES[dtype] * 3 * elems
    exps = 2 * elems
    hbm_s, exp_s = nbytes / hbm_bytes_per_s, exps / exp_per_s
    return {"bytes": nbytes, "exps": exps, "hbm_s": hbm_s, "exp_s": exp_s, "bound_s": max(hbm_s, exp_s),
            "limit": "exp" if exp_s > hbm_s else "hbm"}


def percent_of_bound(measured_ms: float, bound: dict) -> dict:
    """{"bound": % of max(HBM, exp) time, "hbm": % of HBM time, "exp": % of exp time}."""
    s = measured_ms * 1e-3
    return {"bound": 100 * bound["bound_s"] / s, "hbm": 100 * bound["hbm_s"] / s, "exp": 100 * bound["exp_s"] / s}


def card_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (for file names)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def result_paths(out_dir: str | os.PathLike, card: str, when: _dt.datetime) -> tuple[Path, Path]:
    stem = f"gpu_check-{card_slug(card)}-{when.strftime('%Y%m%d-%H%M')}"
    out = Path(out_dir)
    return out / f"{stem}.json", out / f"{stem}.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=3060, help="sequence length L (MUSE ViT-B/32: 3060)")
    p.add_argument("--dim", type=int, default=512, help="d_inner D")
    p.add_argument("--state", type=int, default=16, help="d_state N")
    p.add_argument("--dtype", choices=sorted(ELEMENT_BYTES), default="bf16")
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer timing runs")
    p.add_argument("--iters", type=int, default=50, help="timed runs per measurement (median reported)")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for an interpreter smoke run")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, one dtype, one run: exercises the code paths (CPU interpreter tests)")
    p.add_argument("--hbm-gbs", type=float, default=H100_SXM_HBM_BYTES_PER_S / 1e9,
                   help="peak HBM bandwidth in GB/s used for the bound (default: H100 SXM)")
    p.add_argument("--exp-tops", type=float, default=H100_SXM_EXP_PER_S / 1e12,
                   help="peak exp (MUFU) throughput in Tera-ops/s used for the bound (default: H100 SXM)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--no-save", action="store_true", help="print only, write no result files")
    p.add_argument("--section", choices=[*SECTIONS, "summary"],
                   help="run one section of benchmarks/device_check.sh, writing <out>/<section>.json")
    a = p.parse_args(argv)
    for name in ("batch", "length", "dim", "state", "iters"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")
    if a.quick:
        a.batch, a.length, a.iters = min(a.batch, 4), min(a.length, 1024), min(a.iters, 10)
    if a.smoke:
        a.batch, a.length, a.dim, a.iters = 1, min(a.length, 20), min(a.dim, 32), 1
    return a


# ----------------------------------------------------------------------------------------------------
# GPU parts


class Report:
    def __init__(self):
        self.lines: list[str] = []
        self.data: dict = {"checks": [], "timings": []}
        self.failed = False

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.failed |= not ok
        self.data["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        self.say(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")

    def timing(self, name: str, ms: float | None, **extra) -> None:
        self.data["timings"].append({"name": name, "ms": ms, **extra})
        more = "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        self.say(f"  {name:<44s} {'n/a' if ms is None else f'{ms:9.3f} ms'}  {more}")


def bench(fn, device, iters: int, warmup: int = 3, inner: int = 10, graph: bool = True) -> dict:
    """Per-call milliseconds of fn: {"median_ms", "q1_ms", "q3_ms", "min_ms", "n", "method"}.

    CUDA: after `warmup` calls, `inner` back-to-back calls are captured into one CUDA graph and the graph
    is replayed `iters` times between one event pair each, so host launch overhead is not in the numbers;
    if capture fails (a host sync inside fn) or graph=False (fn replays a graph itself, or validates its
    input on the host), the same `inner` calls run back to back inside one event pair.
    The inputs are reused (L2 warm where they fit; see "l2" in the section files). CPU: perf_counter.
    """
    import statistics

    import torch
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times, method = [], "perf_counter"
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            captured, method = None, "cuda-graph"
            try:
                if not graph:
                    raise RuntimeError("graph capture not requested")
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    fn()
                torch.cuda.current_stream().wait_stream(side)
                captured = torch.cuda.CUDAGraph()
                with torch.cuda.graph(captured):
                    for _ in range(inner):
                        fn()
                captured.replay()
                torch.cuda.synchronize(device)
            except Exception:  # noqa: BLE001 - not capturable: fall back to launches in one event pair
                captured, method = None, "event-pair"
                torch.cuda.synchronize(device)
            run = captured.replay if captured is not None else (lambda: [fn() for _ in range(inner)])
            for _ in range(iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / inner)
        else:
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    xs = sorted(times)
    q1, q3 = (statistics.quantiles(xs, n=4, method="inclusive")[::2] if len(xs) > 1 else (xs[0], xs[0]))
    return {"median_ms": statistics.median(xs), "q1_ms": q1, "q3_ms": q3, "min_ms": xs[0], "n": len(xs),
            "inner": inner if device.type == "cuda" else 1, "method": method}


def median_ms(fn, device, iters: int, warmup: int = 3, inner: int = 10) -> float:
    # One call per event pair (inner=1) is for slow eager loops: their launch gaps are what they cost.
    return bench(fn, device, iters, warmup, inner, graph=inner > 1)["median_ms"]


def _torch_dtype(name: str):
    import torch
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def scan_inputs(b, length, d, n, dtype, device):
    import torch
    g = torch.Generator(device="cpu").manual_seed(0)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device=device, dtype=dtype)
    A = lambda: (-torch.exp(torch.log(torch.arange(1, n + 1).float()).repeat(d, 1)  # noqa: E731
                            + 0.3 * torch.randn(d, n, generator=g))).to(device)
    return (r(b, length, d), r(b, length, d, scale=0.5), r(b, length, n), r(b, length, n),
            r(b, length, d), r(b, length, d, scale=0.5), r(b, length, n), r(b, length, n), r(b, length, d),
            A(), A(), torch.randn(d, generator=g).to(device), torch.randn(d, generator=g).to(device),
            (0.5 * torch.randn(d, generator=g) - 2.0).to(device), (0.5 * torch.randn(d, generator=g) - 2.0).to(device))


def scan_error_ratio(out, args) -> float:
    """max |out - ref| / allowed, allowed = 2 ulps of the dtype on the magnitude of the summed directions
    (as in tests/test_triton_scan.py) plus 1e-4 relative for fp32 summation order over long L."""
    import torch.nn.functional as F
    from muse_tvr.kernels.selective_scan import bidirectional_scan_ref, selective_scan_ref
    expected = bidirectional_scan_ref(*args).float()
    w = [a.float() if hasattr(a, "float") else a for a in args]
    y_f = selective_scan_ref(w[0], w[1], w[9], w[2], w[3], w[11], None, w[13], True)
    y_b = selective_scan_ref(w[4], w[5], w[10], w[6], w[7], w[12], None, w[14], True, reverse=True)
    scale = (y_f.abs() + y_b.abs()) * F.silu(w[8]).abs() + expected.abs()
    import torch
    eps = {torch.float32: 0.0, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[out.dtype]
    allowed = (2 * eps + 1e-4) * scale + 1e-5
    return ((out.float() - expected).abs() / allowed).max().item()


def upstream_bidirectional(ext, args):
    """What Vim v2 does with mamba-ssm, as a closure over the scan's 15 (B, L, X) arguments: two
    `selective_scan_fn` forwards (`selective_scan_cuda.fwd`) in upstream's (B, X, L) layout, the backward
    one on flipped copies, the output flipped back and summed; returns (B, D, L)."""
    t = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731  upstream's native (B, D, L) layout
    u_f, dl_f, B_f, C_f, u_b, dl_b, B_b, C_b, z, A_f, A_b, D_f, D_b, bf, bb = args
    up = [t(x) for x in (u_f, dl_f, B_f, C_f, u_b, dl_b, B_b, C_b, z)]

    def ssm(u, dl, A, Bm, Cm, Dv, zz, bias):
        # selective_scan_fn's forward: B/C as (B, 1, N, L), fp32 A/D/bias; returns (out, x, out_z).
        return ext.fwd(u, dl, A, Bm.unsqueeze(1), Cm.unsqueeze(1), Dv, zz, bias, True)[2]

    def two_calls_plus_flips():
        y_f = ssm(up[0], up[1], A_f, up[2], up[3], D_f, up[8], bf)
        y_b = ssm(up[4].flip(-1), up[5].flip(-1), A_b, up[6].flip(-1).contiguous(),
                  up[7].flip(-1).contiguous(), D_b, up[8].flip(-1), bb)
        return y_f + y_b.flip(-1)
    return two_calls_plus_flips


def check_scan(rep: Report, a: argparse.Namespace, device) -> None:
    import torch
    from muse_tvr.kernels.selective_scan.triton_scan import (bidirectional_scan_triton, choose_variant,
                                                             default_block_d)
    rep.say("selective scan (fused bidirectional)")
    # Correctness: edge shapes in every dtype, then the benchmark shape in its dtype.
    small = [(1, 1, 8, 16), (2, 37, 40, 16), (3, 130, 96, 8), (1, 300, 64, 16)]
    for dt in (("fp32",) if a.smoke else ("fp32", "fp16", "bf16")):
        if a.smoke:
            small = small[:1]
        for (b, length, d, n) in small:
            args = scan_inputs(b, length, d, n, _torch_dtype(dt), device)
            for variant, chunk in (("sequential", None), ("chunked", 64)):
                out = bidirectional_scan_triton(*args, variant=variant, chunk_size=chunk)
                r = scan_error_ratio(out, args)
                rep.check(f"scan {variant} B{b}-L{length}-D{d}-N{n}-{dt}", r <= 1.0, f"err/allowed {r:.3f}")
    b, length, d, n = a.batch, a.length, a.dim, a.state
    args = scan_inputs(b, length, d, n, _torch_dtype(a.dtype), device)
    auto_variant, auto_chunk = choose_variant(b, d, length, default_block_d(d),
                                              torch.cuda.get_device_properties(device).multi_processor_count
                                              if device.type == "cuda" else None)
    for variant, chunk in (("sequential", None), ("chunked", auto_chunk if auto_variant == "chunked" else 512)):
        out = bidirectional_scan_triton(*args, variant=variant, chunk_size=chunk)
        r = scan_error_ratio(out, args)
        rep.check(f"scan {variant} B{b}-L{length}-D{d}-N{n}-{a.dtype}", r <= 1.0, f"err/allowed {r:.3f}")
        del out

    rep.say(f"timings at B{b} L{length} D{d} N{n} {a.dtype}; heuristic picks {auto_variant}"
            + (f" (chunk {auto_chunk})" if auto_variant == "chunked" else ""))
    bound = scan_bound(b, length, d, n, a.dtype, a.hbm_gbs * 1e9, a.exp_tops * 1e12)
    rep.say(f"  bound: HBM {bound['hbm_s'] * 1e3:.3f} ms, exp {bound['exp_s'] * 1e3:.3f} ms "
            f"({bound['limit']}-bound); peaks {a.hbm_gbs:.0f} GB/s, {a.exp_tops:.2f} Texp/s")
    rep.data["scan_bound"] = bound
    best = None
    configs = [("auto", None, None)] + [("sequential", None, bd) for bd in (16, 32, 64)] + \
              [("chunked", c, 16) for c in (256, 512, 1024) if c < length]
    if a.smoke:
        configs = [("auto", None, None), ("chunked", 8, None)]
    for variant, chunk, bd in configs:
        fn = lambda: bidirectional_scan_triton(*args, variant=variant, chunk_size=chunk, block_d=bd)  # noqa: E731
        ms = median_ms(fn, device, a.iters)
        pct = percent_of_bound(ms, bound)
        rep.timing(f"triton {variant} chunk={chunk} block_d={bd}", ms, pct_bound=pct["bound"],
                   pct_hbm=pct["hbm"], pct_exp=pct["exp"])
        if best is None or ms < best[0]:
            best = (ms, variant, chunk, bd)
    rep.data["scan_best"] = {"ms": best[0], "variant": best[1], "chunk": best[2], "block_d": best[3]}
    from muse_tvr.kernels.selective_scan import bidirectional_scan_ref
    eager_iters = 1 if length > 512 else 3
    rep.timing("PyTorch eager (bidirectional_scan_ref loop)",
               median_ms(lambda: bidirectional_scan_ref(*args), device, eager_iters, warmup=1, inner=1))
    rep.data["scan_ms"] = best[0]
    rep.data["scan_achieved"] = achieved(best[0], bound)
    ext, why = upstream_extension("selective_scan_cuda", device)
    if ext is None:
        rep.say(f"  mamba-ssm selective_scan_cuda not usable ({why}); skipped")
        rep.data["scan_vs_mamba_ssm_reason"] = why
        rep.data["scan_b1_vs_mamba_ssm_reason"] = why
    else:
        two_calls_plus_flips = upstream_bidirectional(ext, args)
        ref_up = two_calls_plus_flips().transpose(1, 2).float()
        ours = bidirectional_scan_triton(*args).float()
        err = (ours - ref_up).abs().max().item()
        rep.check("scan vs mamba-ssm CUDA (2 calls + flips)", err <= 0.05 * max(1.0, ref_up.abs().max().item()),
                  f"max abs err {err:.3e}")
        upstream_ms = median_ms(two_calls_plus_flips, device, a.iters)
        rep.timing("mamba-ssm selective_scan_fwd x2 + flips", upstream_ms)
        ratio = best[0] / upstream_ms
        rep.say(f"  best triton / mamba-ssm = {ratio:.3f} (target <= {TARGET_SCAN_RATIO})")
        rep.data["scan_vs_mamba_ssm"] = ratio
        # One video (B = 1): the heuristic's chunked pair against the same two upstream calls.
        args1 = scan_inputs(1, length, d, n, _torch_dtype(a.dtype), device)
        ours1 = median_ms(lambda: bidirectional_scan_triton(*args1), device, a.iters)
        up1 = median_ms(upstream_bidirectional(ext, args1), device, a.iters)
        rep.timing("triton auto B1", ours1)
        rep.timing("mamba-ssm selective_scan_fwd x2 + flips B1", up1)
        rep.say(f"  B=1: triton / mamba-ssm = {ours1 / up1:.3f} (target <= 1)")
        rep.data["scan_b1_vs_mamba_ssm"] = ours1 / up1
        del args1
    pct = percent_of_bound(best[0], bound)["bound"]
    rep.say(f"  best triton: {best[0]:.3f} ms = {pct:.1f}% of max(HBM, exp) bound (target >= "
            f"{100 * TARGET_BOUND_FRACTION:.0f}%)")


def check_conv(rep: Report, a: argparse.Namespace, device) -> None:
    import torch
    from muse_tvr.kernels.causal_conv import bidirectional_causal_conv_ref
    from muse_tvr.kernels.causal_conv.triton_conv import bidirectional_causal_conv_triton
    rep.say("causal conv (bidirectional, width 4, SiLU)")
    g = torch.Generator(device="cpu").manual_seed(1)
    ulp = {"fp32": 1e-5, "fp16": 2.0 ** -10, "bf16": 2.0 ** -7}
    for dt in (("fp32",) if a.smoke else ("fp32", "fp16", "bf16")):
        for (b, length, d, w) in [(1, 1, 8, 4), (2, 37, 40, 3), (3, 300, 96, 4)][:1 if a.smoke else 3]:
            x = torch.randn(b, length, d, generator=g).to(device=device, dtype=_torch_dtype(dt))
            wf, wb = (torch.randn(d, w, generator=g).to(device) * 0.5 for _ in range(2))
            bf, bb = (torch.randn(d, generator=g).to(device) * 0.1 for _ in range(2))
            got = bidirectional_causal_conv_triton(x, wf, bf, wb, bb)
            want = bidirectional_causal_conv_ref(x, wf, bf, wb, bb)
            r = max(((o.float() - e.float()).abs() / (ulp[dt] * (e.float().abs() + 1))).max().item()
                    for o, e in zip(got, want))
            rep.check(f"conv B{b}-L{length}-D{d}-W{w}-{dt}", r <= 1.0, f"err/allowed {r:.3f}")
    b, length, d = a.batch, a.length, a.dim
    x = torch.randn(b, length, 2 * d, generator=g).to(device=device, dtype=_torch_dtype(a.dtype))[..., :d]
    wf, wb = (torch.randn(d, 4, generator=g).to(device) * 0.5 for _ in range(2))
    bf, bb = (torch.randn(d, generator=g).to(device) * 0.1 for _ in range(2))
    bound = conv_bound(b, length, d, a.dtype, a.hbm_gbs * 1e9, a.exp_tops * 1e12)
    ms = median_ms(lambda: bidirectional_causal_conv_triton(x, wf, bf, wb, bb), device, a.iters)
    rep.timing(f"triton conv B{b} L{length} D{d} (x a view of xz)", ms, pct_bound=percent_of_bound(ms, bound)["bound"])
    rep.timing("PyTorch eager (2x causal_conv1d_ref)",
               median_ms(lambda: bidirectional_causal_conv_ref(x, wf, bf, wb, bb), device, a.iters))
    rep.data["conv_ms"] = ms
    rep.data["conv_achieved"] = achieved(ms, bound)
    ext, why = upstream_extension("causal_conv1d_cuda", device)
    if ext is None:
        rep.say(f"  causal-conv1d causal_conv1d_cuda not usable ({why}); skipped")
        rep.data["conv_vs_causal_conv1d_reason"] = why
    else:
        xt = x.transpose(1, 2).contiguous()
        wf2, wb2, bf2, bb2 = (v.to(xt.dtype).contiguous() for v in (wf, wb, bf, bb))

        def conv(inp, w, bias):
            out = torch.empty_like(inp)
            ext.causal_conv1d_fwd(inp, w, bias, None, None, out, None, True)
            return out
        fn = lambda: (conv(xt, wf2, bf2), conv(xt.flip(-1).contiguous(), wb2, bb2).flip(-1))  # noqa: E731
        up_ms = median_ms(fn, device, a.iters)
        rep.timing("causal_conv1d_fwd x2 + flips ((B, D, L) input)", up_ms)
        rep.data["conv_vs_causal_conv1d"] = ms / up_ms


def check_pyramid(rep: Report, a: argparse.Namespace, device) -> None:
    """The triton backend's pyramid op vs the reference op on the same module: error against an fp32
    reference (the reference op in float32 on the same rounded tokens and weights), and timings."""
    import copy

    import torch
    from muse_tvr.engine.backend import get
    from muse_tvr.engine.config import HeadConfig, VisionConfig
    from muse_tvr.engine.pyramid import FeaturePyramid
    rep.say("fused pyramid")
    frames, channels, grid = (1, 32, 7) if a.smoke else (12, 512, 7)
    dtype = _torch_dtype(a.dtype)
    torch.manual_seed(0)
    pyr = FeaturePyramid(HeadConfig(d_model=channels), VisionConfig(patch_size=224 // grid, output_dim=channels))
    pyr = pyr.to(device=device, dtype=dtype).eval()
    tokens = torch.randn(a.batch, frames, 1 + grid * grid, channels, device=device).to(dtype)
    fused_ops, ref_ops = get("triton"), get("reference")
    with torch.no_grad():
        want = copy.deepcopy(pyr).float()(tokens.float(), ref_ops)
        err = (pyr(tokens, fused_ops).float() - want).abs().max().item()
        eager_err = (pyr(tokens, ref_ops).float() - want).abs().max().item()
    rep.data["pyramid"] = {"batch": a.batch, "frames": frames, "grid": grid, "channels": channels,
                           "dtype": a.dtype, "max_abs_err": err, "eager_max_abs_err": eager_err}
    # LayerNorm outputs are O(1); bf16 rounding of O(1) values is ~1e-2, fp32 GEMM order ~1e-4.
    limit = 1e-3 if a.dtype == "fp32" else 6e-2
    rep.check(f"pyramid fused vs eager ({a.dtype})", bool(err <= limit), f"max abs err {err:.3e} (limit {limit})")
    iters = 1 if a.smoke else a.iters
    fused = bench(lambda: pyr(tokens, fused_ops), device, iters)
    eager = bench(lambda: pyr(tokens, ref_ops), device, iters)
    rep.timing("pyramid fused", fused["median_ms"], q1=fused["q1_ms"], q3=fused["q3_ms"], method=fused["method"])
    rep.timing("pyramid eager", eager["median_ms"], q1=eager["q1_ms"], q3=eager["q3_ms"], method=eager["method"])
    rep.data["pyramid_timed"] = {"fused": fused, "eager": eager}
    rep.data["pyramid_vs_eager"] = fused["median_ms"] / eager["median_ms"]
    rep.say(f"  fused / eager = {rep.data['pyramid_vs_eager']:.3f} (target <= {1 / TARGET_PYRAMID_SPEEDUP:.2f})")


def check_head(rep: Report, a: argparse.Namespace, device) -> None:
    """The whole ViT-B/32 head (random weights) at one video, triton backend vs reference."""
    import torch
    from muse_tvr.engine.backend import get
    from muse_tvr.engine.config import TINY, VIT_B_32
    from muse_tvr.engine.mamba import MuseHead
    triton_ops = get("triton")
    cfg = TINY if a.smoke else VIT_B_32
    rep.say(f"MUSE head ({cfg.head.depth} blocks, {cfg.name} widths)")
    torch.manual_seed(0)
    head = MuseHead(cfg.head).to(device).eval()
    length = a.length
    seq = torch.randn(1, length, cfg.head.d_model, device=device)
    with torch.no_grad():
        want = head(seq)
        got = head(seq, triton_ops)
        err = (got - want).abs().max().item()
        rep.check(f"head triton vs reference fp32 L{length}", err <= 2e-3 * max(1.0, want.abs().max().item()),
                  f"max abs err {err:.3e}")
        ms_fast = median_ms(lambda: head(seq, triton_ops), device, 1 if a.smoke else max(3, a.iters // 5),
                            warmup=0 if a.smoke else 3)
        ms_ref = median_ms(lambda: head(seq), device, 1, warmup=0, inner=1)
    rep.timing(f"head triton backend B1 L{length} fp32", ms_fast)
    rep.timing(f"head reference B1 L{length} fp32", ms_ref)



# ----------------------------------------------------------------------------------------------------
# Peaks, upstream kernels, interpreter support

# HBM peaks by card name, first match wins (datasheets): H200 HBM3e 4.8 TB/s, H100 NVL 3.9 TB/s,
# H100 PCIe 2.0 TB/s, A100 2.0 TB/s.
HBM_PEAKS = (("h200", 4.8e12), ("h100 nvl", 3.9e12), ("h100 pcie", 2.0e12), ("h100", H100_SXM_HBM_BYTES_PER_S),
             ("a100", 2.0e12))


def device_peaks(name: str, sms: int | None = None, boost_ghz: float | None = None) -> dict:
    """{"hbm_bytes_per_s", "exp_per_s", "source"} for a card name; H100 SXM figures when it is unknown."""
    low = name.lower()
    hbm = next((v for k, v in HBM_PEAKS if k in low), None)
    src = "datasheet by name" if hbm is not None else "unknown card: H100 SXM figures"
    clock = boost_ghz * 1e9 if boost_ghz else H100_SXM_BOOST_HZ
    exp = MUFU_EXP_PER_CLOCK_PER_SM * (sms or H100_SXM_SMS) * clock
    return {"hbm_bytes_per_s": hbm or H100_SXM_HBM_BYTES_PER_S, "exp_per_s": exp, "source": src}


def achieved(ms: float, bound: dict) -> dict:
    """Achieved bytes/s and exp/s of a kernel that moved bound["bytes"] and did bound["exps"] in ms."""
    s = ms * 1e-3
    return {"gb_per_s": bound["bytes"] / s / 1e9, "gexp_per_s": bound["exps"] / s / 1e9,
            "pct_of_bound": 100 * bound["bound_s"] / s, "limit": bound["limit"]}


def upstream_extension(name: str, device):
    """(module, None) for mamba-ssm's / causal-conv1d's compiled forward extension, or (None, reason).
    Found on sys.path (an installed wheel, or build/gpu-baselines/ that device_check.sh puts there)."""
    if device.type != "cuda":
        return None, "CUDA extension, this run has no CUDA device"
    import importlib
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - an ImportError or a broken .so: either way not usable
        return None, f"{name} not importable ({type(e).__name__}: {e})"
    fn = "fwd" if name == "selective_scan_cuda" else "causal_conv1d_fwd"
    if not hasattr(mod, fn):
        return None, f"{name} has no {fn} (a stand-in module, not the compiled extension)"
    return mod, None


# The Triton interpreter of triton < 3.8 breaks with numpy >= 2.4 ("only 0-dimensional arrays can be
# converted to Python scalars", interpreter.py); interpreting is supported with triton >= 3.8 (any numpy)
# or numpy < 2.4. The compiled GPU path does not use numpy and is unaffected.
def interpreter_problem() -> str | None:
    from muse_tvr.kernels import interpreter_problem as problem  # the kernels' own check
    return problem()


# ----------------------------------------------------------------------------------------------------
# Sections of benchmarks/device_check.sh (each its own process and JSON file)


def _git_commit() -> str:
    import subprocess
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out:
        return out
    stamped = (root / "benchmarks" / "COMMIT").read_text().strip() if (root / "benchmarks" / "COMMIT").exists() else ""
    return stamped if re.fullmatch(r"[0-9a-f]{40}", stamped) else os.environ.get("COMMIT", "unknown")


def _nvidia_smi() -> dict:
    import shutil
    import subprocess
    if shutil.which("nvidia-smi") is None:
        return {"error": "nvidia-smi not found"}
    q = "name,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu,driver_version"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return dict(zip(q.split(","), (v.strip() for v in out.split(","))))


_PROBE = None


def _probe_kernel():
    """y = 2x + 1: the smallest kernel that proves Triton compiles, launches and stores on this machine.
    Defined on first use, at module level (the compiler resolves `tl` through the function's globals)."""
    global _PROBE, tl
    if _PROBE is None:
        import triton
        import triton.language as tl

        @triton.jit
        def _axpy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            m = offs < n
            tl.store(y_ptr + offs, 2.0 * tl.load(x_ptr + offs, mask=m) + 1.0, mask=m)
        _PROBE = _axpy
    return _PROBE


def section_preflight(rep: Report, a: argparse.Namespace, device) -> None:
    import shutil
    import sysconfig

    import numpy
    import torch
    import triton
    rep.data.update({"python": platform.python_version(), "numpy": numpy.__version__,
                     "executable": sys.executable, "sys_path_head": sys.path[:4]})
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        smi = _nvidia_smi()
        rep.data["gpu"] = {"name": p.name, "sms": p.multi_processor_count, "capability": f"{p.major}.{p.minor}",
                           "memory_gib": p.total_memory / 2 ** 30,
                           "l2_bytes": getattr(p, "L2_cache_size", None), "nvidia_smi": smi}
        rep.say(f"  GPU {p.name}: {p.multi_processor_count} SMs, sm_{p.major}{p.minor}, "
                f"{p.total_memory / 2 ** 30:.0f} GiB; nvidia-smi {smi}")
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    rep.data["toolchain"] = {"cc": cc and shutil.which(cc), "python_h": str(include) if include.exists() else None}
    need_toolchain = device.type == "cuda"   # Triton builds its launcher with a C compiler + Python.h
    rep.check("C compiler", cc is not None or not need_toolchain, f"{cc and shutil.which(cc)}")
    rep.check("Python.h", include.exists() or not need_toolchain, str(include))
    problem = interpreter_problem()
    rep.check("interpreter support", problem is None, problem or "ok")

    x = torch.randn(1000, device=device)
    y = torch.full_like(x, float("nan"))
    t0 = time.perf_counter()
    _probe_kernel()[(triton.cdiv(1000, 256),)](x, y, 1000, BLOCK=256)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rep.check("tiny Triton kernel compiled and run", bool(torch.equal(y, 2.0 * x + 1.0)),
              f"first launch {time.perf_counter() - t0:.2f} s")
    for name in ("selective_scan_cuda", "causal_conv1d_cuda"):
        ext, why = upstream_extension(name, device)
        rep.data[name] = getattr(ext, "__file__", None) if ext else why
        rep.say(f"  {name}: {rep.data[name]}")
    if device.type == "cuda":
        # Copy probe: read + write of a 2 GiB buffer; the measured ceiling beside the datasheet one.
        src = torch.empty(2 ** 29, device=device)
        dst = torch.empty_like(src)
        r = bench(lambda: dst.copy_(src), device, 10, inner=5)
        rep.data["copy_probe"] = {"bytes": 2 * src.numel() * 4, **r,
                                  "gb_per_s": 2 * src.numel() * 4 / (r["median_ms"] * 1e-3) / 1e9}
        rep.say(f"  copy probe: {rep.data['copy_probe']['gb_per_s']:.0f} GB/s (read + write, 2 x 2 GiB)")


def section_head(rep: Report, a: argparse.Namespace, device) -> None:
    """The MUSE head (triton) vs the depth-matched Transformer head at MUSE's two lengths, B = 1."""
    import torch
    from muse_tvr.engine.backend import get
    from muse_tvr.engine.config import TINY, VIT_B_16, VIT_B_32
    from muse_tvr.engine.mamba import MuseHead
    from muse_tvr.engine.transformer_head import TransformerHead, depth_matched
    check_head(rep, a, device)
    cases = [("L3060", VIT_B_32), ("L12360", VIT_B_16)]
    for label, cfg in cases:
        if a.smoke:
            cfg = TINY
        length = 16 if a.smoke else cfg.sequence_length()
        torch.manual_seed(0)
        head = MuseHead(cfg.head).to(device).eval()
        trans = TransformerHead(depth_matched(cfg.head.d_model, cfg.head.depth)).to(device).eval()
        seq = torch.randn(1, length, cfg.head.d_model, device=device)
        iters = 1 if a.smoke else max(5, a.iters // 5)
        with torch.no_grad():
            m = bench(lambda: head(seq, get("triton")), device, iters, warmup=0 if a.smoke else 3)
            t = bench(lambda: trans(seq), device, iters, warmup=0 if a.smoke else 3)
        rep.timing(f"MUSE head triton fp32 B1 {cfg.name} L{length}", m["median_ms"], q1=m["q1_ms"], q3=m["q3_ms"],
                   method=m["method"])
        rep.timing(f"Transformer head (depth-matched) fp32 L{length}", t["median_ms"], q1=t["q1_ms"],
                   q3=t["q3_ms"], method=t["method"])
        rep.data[f"head_vs_transformer_{label}"] = m["median_ms"] / t["median_ms"]
        rep.data[f"head_{label}"] = {"length": length, "muse": m, "transformer": t}


def section_video(rep: Report, a: argparse.Namespace, device) -> None:
    """The whole video encoder (CLIP, pyramid, head, pooling), random weights, B = 1, T = 12 (smoke: TINY):
    the triton backend replayed from a CUDA graph, the same eager, and the PyTorch reference."""
    import torch
    from muse_tvr.engine.backend import get
    from muse_tvr.engine.config import TINY, VIT_B_32
    from muse_tvr.engine.model import MuseModel, learn
    cfg = TINY if a.smoke else VIT_B_32
    # cuDNN convs default to TF32 (CLIP's patch conv): off, so both paths are fp32.
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = MuseModel(cfg).to(device).eval()
    t = 1 if a.smoke else cfg.max_frames
    s = cfg.vision.image_size
    frames = torch.randn(1, t, 3, s, s, device=device)
    mask = torch.ones(1, t, device=device)
    triton_ops = get("triton")

    def encode():  # MuseModel.encode_video without its host-side input checks, so it can be captured
        return learn(model.pyramid, model.head, model.encode_frames(frames), mask, triton_ops)
    with torch.no_grad():
        want = model.set_backend("reference").encode_video(frames, mask)
        err = (model.set_backend("triton").encode_video(frames, mask) - want).abs().max().item()
        rep.check(f"video encoder triton vs reference T{t}", err <= 2e-3, f"max abs err {err:.3e}")
        iters = 1 if a.smoke else 10
        w = 0 if a.smoke else 1
        g = bench(encode, device, iters, warmup=w, inner=1, graph=device.type == "cuda")
        e = bench(encode, device, iters, warmup=w, inner=1, graph=False)
        model.set_backend("reference")
        r = bench(lambda: model.encode_video(frames, mask), device, 1, warmup=0, inner=1, graph=False)
    rep.data["graph_captured"] = g["method"] != e["method"]
    rep.timing(f"video encoder triton, {g['method']}", g["median_ms"])
    rep.timing("video encoder triton, eager", e["median_ms"])
    rep.timing("video encoder PyTorch reference, eager", r["median_ms"])
    rep.data.update({"video_graph": g, "video_triton_eager": e, "video_reference": r,
                     "video_encode_vs_eager": g["median_ms"] / r["median_ms"],
                     "video_graph_vs_triton_eager": g["median_ms"] / e["median_ms"]})


SECTIONS = {"preflight": section_preflight, "conv": lambda r, a, d: check_conv(r, a, d),
            "scan": lambda r, a, d: check_scan(r, a, d), "pyramid": lambda r, a, d: check_pyramid(r, a, d),
            "head": section_head, "video": section_video}
SUMMARY_KEYS = ("scan_vs_mamba_ssm", "scan_b1_vs_mamba_ssm", "scan_pct_of_bound", "conv_vs_causal_conv1d", "pyramid_vs_eager",
                "head_vs_transformer_L3060", "head_vs_transformer_L12360", "video_encode_vs_eager")


def summarize_sections(out_dir: Path) -> dict:
    """summary.json's content from the section files in out_dir. Every ratio is time(ours) / time(theirs):
    below 1 means this engine is faster. A missing number comes with the reason."""
    secs = {}
    for name in SECTIONS:
        f = out_dir / f"{name}.json"
        secs[name] = json.loads(f.read_text()) if f.exists() else None
    pre = secs["preflight"] or {}
    summary = {"card": pre.get("card", "unknown"), "date": pre.get("date"), "commit": pre.get("commit", _git_commit()),
               "ratio_convention": "time(this engine) / time(baseline); < 1 means this engine is faster",
               "sections": {k: ("missing" if v is None else "failed" if v.get("failed") else "ok")
                            for k, v in secs.items()}}
    found = {}
    for v in secs.values():
        for k, val in (v or {}).items():
            found.setdefault(k, val)
    if "scan_achieved" in found:
        found["scan_pct_of_bound"] = found["scan_achieved"]["pct_of_bound"]
    if found.get("pyramid_vs_eager") is None and isinstance(found.get("pyramid"), dict) \
            and found["pyramid"].get("speedup"):
        found["pyramid_vs_eager"] = 1.0 / found["pyramid"]["speedup"]
    for k in SUMMARY_KEYS:
        summary[k] = found.get(k)
        if summary[k] is None:
            summary[f"{k}_reason"] = found.get(f"{k}_reason", "its section did not produce it (see its log)")
    for k in ("peaks", "copy_probe", "scan_achieved", "conv_achieved", "graph_captured"):
        if k in found:
            summary[k] = found[k]
    summary["all_sections_ok"] = all(v == "ok" for v in summary["sections"].values())
    return summary


def run_section(name: str, a: argparse.Namespace) -> int:
    """One section of device_check.sh: writes <out>/<name>.json; 0 if it ran and its checks passed."""
    import torch
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if name == "summary":
        s = summarize_sections(out)
        (out / "summary.json").write_text(json.dumps(s, indent=2, default=str))
        print(json.dumps({k: s[k] for k in ("card", "commit", *SUMMARY_KEYS)}, indent=1, default=str))
        return 0 if s["all_sections_ok"] else 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rep = Report()
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        card = p.name
        peaks = device_peaks(card, p.multi_processor_count)
        if a.hbm_gbs == H100_SXM_HBM_BYTES_PER_S / 1e9:   # not overridden on the command line
            a.hbm_gbs, a.exp_tops = peaks["hbm_bytes_per_s"] / 1e9, peaks["exp_per_s"] / 1e12
        rep.data["l2"] = {"bytes": getattr(p, "L2_cache_size", None),
                          "state": "inputs reused across timed calls: warm for what fits in L2, streamed "
                                   "from HBM for the B16 x L3060 activations (each ~50 MB)"}
    else:
        card = f"cpu-interpreter-{platform.machine()}"
        peaks = {"hbm_bytes_per_s": a.hbm_gbs * 1e9, "exp_per_s": a.exp_tops * 1e12,
                 "source": "rehearsal: no device, H100 SXM figures"}
    import triton
    rep.data.update({"section": name, "card": card, "commit": _git_commit(), "torch": torch.__version__,
                     "triton": triton.__version__,
                     "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "mode": "device" if device.type == "cuda" else "rehearsal (TRITON_INTERPRET=1)",
                     "peaks": {**peaks, "hbm_bytes_per_s": a.hbm_gbs * 1e9, "exp_per_s": a.exp_tops * 1e12},
                     "args": vars(a)})
    rep.say(f"[{name}] on {card}, torch {torch.__version__}, triton {triton.__version__}")
    t0 = time.perf_counter()
    try:
        SECTIONS[name](rep, a, device)
    except Exception as e:  # noqa: BLE001 - recorded in the section file; the other sections still run
        import traceback
        rep.check(name, False, f"raised {type(e).__name__}: {e}")
        rep.data["traceback"] = traceback.format_exc()
        print(rep.data["traceback"], file=sys.stderr)
    rep.data.update({"failed": rep.failed, "seconds": time.perf_counter() - t0, "log": rep.lines})
    (out / f"{name}.json").write_text(json.dumps(rep.data, indent=2, default=str))
    rep.say(f"[{name}] {'FAILED' if rep.failed else 'ok'} in {rep.data['seconds']:.0f} s")
    return 1 if rep.failed else 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    problem = interpreter_problem()
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return 3
    if a.section:
        return run_section(a.section, a)
    import torch
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing was checked (run it on a GPU machine).")
        return 0
    device = torch.device(a.device)
    from muse_tvr.kernels import triton_interpreting
    if device.type == "cpu" and not triton_interpreting():
        print("gpu_check: --device cpu needs TRITON_INTERPRET=1 in the environment", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-interpreter-{platform.machine()}"
    when = _dt.datetime.now()
    rep = Report()
    import triton
    rep.data.update({"card": card, "date": when.isoformat(timespec="seconds"), "torch": torch.__version__,
                     "triton": triton.__version__, "args": vars(a),
                     "peaks": {"hbm_bytes_per_s": a.hbm_gbs * 1e9, "exp_per_s": a.exp_tops * 1e12}})
    rep.say(f"gpu_check on {card}, {when:%Y-%m-%d %H:%M}, torch {torch.__version__}, triton {triton.__version__}")
    t0 = time.perf_counter()
    for section in (check_conv, check_scan, check_pyramid, check_head):
        try:
            section(rep, a, device)
        except Exception as e:  # noqa: BLE001 - a crash in one kernel must not hide the others' results
            rep.check(section.__name__, False, f"raised {type(e).__name__}: {e}")
    rep.say(f"total {time.perf_counter() - t0:.0f} s; {'FAILED' if rep.failed else 'all checks passed'}")
    rep.data["failed"] = rep.failed
    if not a.no_save:
        json_path, txt_path = result_paths(a.out, card, when)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep.data, indent=2, default=str))
        txt_path.write_text("\n".join(rep.lines) + "\n")
        print(f"wrote {json_path} and {txt_path}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    # Run by path, Python puts benchmarks/ first on sys.path; the repository root is what the imports need.
    _root = str(Path(__file__).resolve().parents[1])
    if _root not in sys.path:
        sys.path.insert(1, _root)
    sys.exit(main())
