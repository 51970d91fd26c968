"""The benchmark harness: sweeps (target, backend) cases over shapes, times them, writes JSON + markdown.

Timing: `warmup` untimed calls, then `repeats` timed calls (each bracketed by a device synchronise on
CUDA; optionally replayed from a captured CUDA graph); the summary is the median with the interquartile
range, so a noisy shared machine moves the spread more than the centre. Slow cases get fewer repeats
(`budget_s` per case), never fewer than `min_repeats`.

    python -m benchmarks.run --mode quick       # from the repository root
    muse-tvr bench [--full]                     # the same through the CLI
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import registry
from muse_tvr.engine.config import VIT_B_16, VIT_B_32

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # the committed results of this checkout
DEFAULT_OUT = Path("muse-tvr-bench")  # where `muse-tvr bench` writes unless told: never the committed ones


# ----- statistics ----------------------------------------------------------------------------------
def summarize(times: list[float]) -> dict:
    """Median, quartiles (inclusive method: exact on small samples), IQR, min, max, n; seconds."""
    if not times:
        raise ValueError("no timings to summarise")
    xs = sorted(times)
    if len(xs) == 1:
        q1 = q3 = xs[0]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return {"median_s": statistics.median(xs), "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1,
            "min_s": xs[0], "max_s": xs[-1], "n": len(xs)}


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 5,
            budget_s: float | None = None, min_repeats: int = 3, cuda_graph: bool = False) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn after `warmup` calls (first call also sizes repeats)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    first = None
    with torch.no_grad():
        for i in range(max(warmup, 1)):
            t0 = time.perf_counter()
            fn()
            sync()
            first = time.perf_counter() - t0 if first is None else min(first, time.perf_counter() - t0)
        if cuda_graph:
            if device.type != "cuda":
                raise ValueError("CUDA graphs need a CUDA device")
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            fn = graph.replay
        if budget_s is not None and first and first > 0:
            repeats = max(min_repeats, min(repeats, int(budget_s / first)))
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    return times


def gemm_rate(device: torch.device, m: int = 3060, k: int = 512, n: int = 1024, repeats: int = 10) -> dict:
    """This machine's fp32 GEMM rate at the head's shapes (in_proj: 3060 x 512 @ 512 x 1024)."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    times = time_fn(lambda: a @ b, device, warmup=2, repeats=repeats)
    s = summarize(times)
    flops = 2.0 * m * k * n
    return {"shape": [m, k, n], "gflops_median": flops / s["median_s"] / 1e9,
            "gflops_best": flops / s["min_s"] / 1e9, **s}


# ----- machine -------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain", "--",
                                                                              "benchmarks", "muse_tvr")),
            "device": str(device), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ----- plans ---------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What to run: cases per target, over points; a backend list per target."""
    name: str
    cases: list[tuple[str, str, registry.Point]] = field(default_factory=list)
    warmup: int = 1
    repeats: int = 5
    budget_s: float = 20.0
    min_repeats: int = 3


def _length_points(frames_b32: list[int], frames_b16: list[int], batches: list[int]) -> list[registry.Point]:
    pts = [registry.Point(VIT_B_32, b, t) for t in frames_b32 for b in batches]
    pts += [registry.Point(VIT_B_16, b, t) for t in frames_b16 for b in batches]
    return sorted(pts, key=lambda p: (p.batch, p.seq_len))


LEARNER_BACKENDS = registry.ENGINE_BACKENDS + registry.TRANSFORMER_BACKENDS
HEAD_BACKENDS = tuple(b for b in LEARNER_BACKENDS if b != "ort")  # ort runs the whole learner only


def make_plan(mode: str, device: torch.device) -> Plan:
    """quick: a few minutes on a 2-core CPU; full: the whole sweep (L up to 24,720, batch 1 and 4)."""
    if mode == "tiny":  # for tests: real code paths at toy sizes
        from muse_tvr.engine.config import TINY
        plan = Plan("tiny", warmup=1, repeats=3, budget_s=5.0)
        for t in (2, 4):
            pt = registry.Point(TINY, 1, t)
            for backend in HEAD_BACKENDS:
                plan.cases.append(("head", backend, pt))
        plan.cases.append(("scan", "reference", registry.Point(TINY, 1, 2)))
        plan.cases.append(("scan", "cpu-chunked", registry.Point(TINY, 1, 2)))
        return plan
    if mode == "learner":  # tokens -> embedding at ViT-B/32, 12 frames: every backend, ONNX Runtime too
        plan = Plan("learner", warmup=1, repeats=5, budget_s=12.0, min_repeats=3)
        for backend in LEARNER_BACKENDS:
            plan.cases.append(("learner", backend, registry.Point(VIT_B_32, 1, 12)))
        return plan
    if mode == "quick":
        plan = Plan("quick", warmup=1, repeats=5, budget_s=12.0, min_repeats=3)
        points = _length_points([4, 12], [], [1])
    elif mode == "full":
        plan = Plan("full", warmup=1, repeats=7, budget_s=40.0, min_repeats=3)
        points = _length_points([4, 8, 12, 24, 48], [12, 24], [1])
        points += _length_points([12], [12], [4])
    else:
        raise ValueError(f"unknown mode {mode!r}; choose quick, full, learner or tiny")
    for pt in points:
        for backend in HEAD_BACKENDS:
            # The naive loop takes ~1.3 ms per step on 2 cores: past 12,360 tokens it only costs time.
            if backend == "reference" and pt.seq_len * pt.batch > 12_360:
                continue
            # CPU attention past ~12k tokens takes minutes per call and adds nothing to the picture.
            if backend.startswith("transformer") and device.type == "cpu" and pt.seq_len * pt.batch > 13_000:
                continue
            plan.cases.append(("head", backend, pt))
    mid = registry.Point(VIT_B_32, 1, 12)
    if mode == "full":  # the learner over length too: the only sweep that includes ONNX Runtime
        for pt in _length_points([4, 12, 48], [12], [1]):
            for backend in LEARNER_BACKENDS:
                if backend == "reference" and pt.seq_len > 3060:
                    continue  # its head-only sweep above already shows the trend
                plan.cases.append(("learner", backend, pt))
    else:
        for backend in LEARNER_BACKENDS:
            plan.cases.append(("learner", backend, mid))
    for target, backends in (("scan", ("reference", "cpu-chunked", "cpp", "triton", "mamba-ssm")),
                             ("conv", ("reference", "cpp", "triton")),
                             ("block", ("reference", "cpu-chunked", "cpp", "triton")),
                             ("pyramid", ("reference", "triton")), ("clip", ("reference",))):
        for backend in backends:
            plan.cases.append((target, backend, mid))
    return plan


# ----- running -------------------------------------------------------------------------------------
def run_plan(plan: Plan, device: torch.device, cuda_graph: bool = False, progress: bool = True,
             with_gemm: bool = True, sdpa: str = "auto") -> dict:
    """Run every case of `plan`; `sdpa` pins the attention kernel of the Transformer baselines
    ("auto", "flash", "cudnn", "efficient", "math"); the kernel that actually ran is recorded."""
    from tqdm import tqdm

    from .sdpa import detect_sdpa_backend, sdpa_context

    records = []
    bar = tqdm(plan.cases, desc=f"bench {plan.name}", disable=not progress, unit="case")
    for target, backend, pt in bar:
        bar.set_postfix_str(f"{target}/{backend} {pt.config.name} L={pt.seq_len} B={pt.batch}")
        rec = {"target": target, "backend": backend, "model": pt.config.name, "frames": pt.frames,
               "batch": pt.batch, "seq_len": pt.seq_len,
               "family": "transformer" if backend in registry.TRANSFORMER_BACKENDS else "mamba"}
        reason = registry.skip_reason(target, backend, device)
        if reason:
            records.append({**rec, "status": "skipped", "reason": reason})
            continue
        try:
            with sdpa_context(sdpa):
                prep = registry.build(target, backend, pt, device)
                times = time_fn(prep.fn, device, plan.warmup, plan.repeats, plan.budget_s, plan.min_repeats,
                                cuda_graph)
        except Exception as e:  # a failing backend is recorded, the sweep goes on
            records.append({**rec, "status": "error", "reason": f"{type(e).__name__}: {e}"})
            continue
        stats = summarize(times)
        rec.update(status="ok", params=prep.params, flops=prep.flops, times_s=times, **stats, **prep.info)
        if prep.flops:
            rec["gflops_achieved"] = prep.flops / stats["median_s"] / 1e9
        records.append(rec)
    try:
        ran = detect_sdpa_backend(device, backend=sdpa)
    except RuntimeError as e:  # e.g. cuDNN requested on a CPU: the Transformer cases errored the same way
        ran = f"none ({sdpa} is not available here: {str(e).splitlines()[0]})"
    result = {"plan": plan.name, "machine": machine_info(device), "cuda_graph": cuda_graph,
              "sdpa_requested": sdpa, "sdpa_backend": ran, "records": records}
    if with_gemm:
        result["gemm"] = gemm_rate(device)
    result["speedups"] = speedups(records)
    return result


def speedups(records: list[dict]) -> list[dict]:
    """Ratios of medians at equal (target, model, frames, batch): each backend vs reference and vs
    the depth-matched Transformer."""
    ok = {(r["target"], r["model"], r["frames"], r["batch"], r["backend"]): r["median_s"]
          for r in records if r.get("status") == "ok"}
    out = []
    for (target, model, frames, batch, backend), t in ok.items():
        row = {"target": target, "model": model, "frames": frames, "batch": batch, "backend": backend}
        for base in ("reference", "transformer-depth"):
            b = ok.get((target, model, frames, batch, base))
            if b is not None and base != backend:
                row[f"vs_{base}"] = b / t
        if len(row) > 5:
            out.append(row)
    return out


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Benchmark `{result['plan']}`", "",
             f"- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
             f"device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else ""),
             f"- date: {m['date']}; commit {m['git_commit'][:12]}{' (+local changes)' if m['git_dirty'] else ''}",
             f"- load average at the end (1/5/15 min): {m['load_average']} — other work shared this "
             f"machine; numbers are medians with the interquartile range",
             f"- SDPA kernel that ran (requested {result.get('sdpa_requested', 'auto')}): {result['sdpa_backend']}; CUDA graphs: {result['cuda_graph']}"]
    if "gemm" in result:
        g = result["gemm"]
        lines.append(f"- fp32 GEMM rate {g['shape']}: median {g['gflops_median']:.1f} GFLOP/s, best "
                     f"{g['gflops_best']:.1f} GFLOP/s")
    lines += ["", "| target | backend | model | T | L | B | median ms | IQR ms | n | params | GFLOP/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["records"]:
        if r["status"] != "ok":
            continue
        gf = f"{r['gflops_achieved']:.1f}" if r.get("gflops_achieved") else ""
        params = f"{r['params']:,}" if r.get("params") else ""
        lines.append(f"| {r['target']} | {r['backend']} | {r['model']} | {r['frames']} | {r['seq_len']} | "
                     f"{r['batch']} | {r['median_s'] * 1e3:.1f} | {r['iqr_s'] * 1e3:.1f} | {r['n']} | {params} | {gf} |")
    if result.get("speedups"):
        lines += ["", "Speed-ups (ratio of medians; > 1 means the row's backend is faster):", "",
                  "| target | backend | model | T | B | vs reference | vs transformer-depth |", "|---|---|---|---|---|---|---|"]
        for s in result["speedups"]:
            f = lambda k: f"{s[k]:.2f}x" if k in s else ""  # noqa: E731
            lines.append(f"| {s['target']} | {s['backend']} | {s['model']} | {s['frames']} | {s['batch']} | "
                         f"{f('vs_reference')} | {f('vs_transformer-depth')} |")
    skipped = {(r["backend"], r["reason"]) for r in result["records"] if r["status"] != "ok"}
    if skipped:
        lines += ["", "Not measured:", ""] + [f"- {b}: {why}" for b, why in sorted(skipped)]
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir: Path, stem: str | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{result['plan']}-{result['machine']['device'].split(':')[0]}"
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(to_markdown(result))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("quick", "full", "learner", "tiny"), default="quick")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--stem", default=None, help="output file name without extension")
    p.add_argument("--cuda-graph", action="store_true", help="replay timed calls from a CUDA graph")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--sdpa", default="auto", choices=("auto", "flash", "cudnn", "efficient", "math"),
                   help="attention kernel for the Transformer baselines (default: PyTorch's choice)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    return run_cli(args)


def run_cli(args) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is visible; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_plan(make_plan(args.mode, device), device, cuda_graph=args.cuda_graph,
                      sdpa=getattr(args, "sdpa", "auto"))
    paths = write_results(result, args.out, args.stem)
    if not args.no_plot:
        from .visualize import plot_latency
        paths["png"] = plot_latency(result, paths["json"].with_suffix(".png"))
    print(to_markdown(result))
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
