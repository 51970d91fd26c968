"""MUSE head on CPU at full shape (ViT-B/32, B=1, T=12 -> L=3060): ONNX Runtime + the C++ op library vs ONNX
Runtime with the portable function bodies vs the PyTorch reference (`MuseModel.encode_tokens`, whose scan is
the plain time loop of `bidirectional_scan_ref`).

    .venv/bin/python benchmarks/ort_cpu_bench.py [--repeats 5] [--reference-repeats 1]

Needs `make -C cpp`. Writes benchmarks/results/ort_cpu.json and .md (machine, date, per-backend timings).
Weights are random (timing does not depend on them); all three backends get the same inputs and their
outputs are compared.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import machine_info  # noqa: E402
from muse_tvr.engine.config import get_config  # noqa: E402
from muse_tvr.engine.model import MuseModel  # noqa: E402
from muse_tvr.export.onnx_export import export_part  # noqa: E402
from muse_tvr.export.ort_runner import OrtModel, find_op_library  # noqa: E402


def timed(fn, repeats, warmup=1):
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="ViT-B/32")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--portable-repeats", type=int, default=3)
    ap.add_argument("--reference-repeats", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ort_cpu"))
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = get_config(args.backbone)
    model = MuseModel(cfg).eval()
    g = cfg.vision.grid
    tokens = torch.randn(1, args.frames, 1 + g * g, cfg.embed_dim)
    mask = torch.ones(1, args.frames)
    length = cfg.sequence_length(args.frames)
    lib = find_op_library()
    work = Path(tempfile.mkdtemp(prefix="muse-bench-"))
    print(f"exporting the {cfg.name} head (L = {length}) to {work}", flush=True)
    files = {f.variant: f.path for f in export_part(model, "head", work, "float32",
                                                     variants=("portable", "plugin-nofunc"), log=lambda *a: None)}
    feed = {"tokens": tokens.numpy(), "mask": mask.numpy()}
    results = {}

    oplib = OrtModel(files["plugin-nofunc"], "oplib", lib)
    out_lib, t_lib = timed(lambda: oplib.run(feed)["embedding"], args.repeats)
    results["ort_oplib"] = t_lib
    print(f"ORT + op library: median {statistics.median(t_lib) * 1e3:.1f} ms", flush=True)

    portable = OrtModel(files["portable"], "portable")
    out_port, t_port = timed(lambda: portable.run(feed)["embedding"], args.portable_repeats)
    results["ort_portable"] = t_port
    print(f"ORT portable:     median {statistics.median(t_port) * 1e3:.1f} ms", flush=True)

    with torch.no_grad():
        out_ref, t_ref = timed(lambda: model.encode_tokens(tokens, mask).numpy(), args.reference_repeats, warmup=0)
    results["pytorch_reference"] = t_ref
    print(f"PyTorch ref:      median {statistics.median(t_ref) * 1e3:.1f} ms", flush=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    record = {
        "what": f"MUSE head (pyramid + {cfg.head.depth} bidirectional Mamba blocks + pooling), tokens -> embedding",
        "model": cfg.name, "batch": 1, "frames": args.frames, "sequence_length": length,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine_info(torch.device("cpu")),
                    "note": "shared 2-core CPU dev box; other jobs may have been running"},
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                     "python": platform.python_version()},
        "op_library": str(lib.relative_to(ROOT)) if lib.is_relative_to(ROOT) else str(lib),
        "seconds": results, "median_s": med,
        "speedup_vs_reference": {k: med["pytorch_reference"] / v for k, v in med.items()},
        "max_abs_diff_vs_reference": {"ort_oplib": float(np.abs(out_lib - out_ref).max()),
                                      "ort_portable": float(np.abs(out_port - out_ref).max())},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    rows = [("ORT + C++ op library", "ort_oplib"), ("ORT portable (Scan function bodies)", "ort_portable"),
            ("PyTorch reference", "pytorch_reference")]
    md = [f"# MUSE head on CPU, {cfg.name}, B=1, T={args.frames} (L={length})", "",
          f"{record['date']}, {record['machine']['cpu']}, {record['machine']['cores']} cores "
          f"({record['machine']['note']}); torch {torch.__version__}, onnxruntime {record['versions']['onnxruntime']}.",
          "", "| backend | median | runs | speed-up vs reference | max abs diff vs reference |",
          "|---|---|---|---|---|"]
    for label, key in rows:
        diff = record["max_abs_diff_vs_reference"].get(key)
        md.append(f"| {label} | {med[key] * 1e3:.0f} ms | {len(results[key])} | "
                  f"{record['speedup_vs_reference'][key]:.1f}x | {'-' if diff is None else f'{diff:.1e}'} |")
    md += ["", "Produced by `benchmarks/ort_cpu_bench.py`."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
