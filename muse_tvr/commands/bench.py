"""`muse-tvr bench`: latency of the MUSE head vs the Transformer baselines (and the kernels) on this machine.

The harness lives in the source tree's `benchmarks/` package (registry, run, visualize); this command
puts the repository root on the import path, so it works from a clone with an editable install.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the MUSE head against the Transformer baselines",
                       description="Quick mode (default) takes a few minutes on a 2-core CPU: head at "
                       "L = 1020 and 3060 plus one scan/conv/block/pyramid/CLIP case. --full sweeps L up "
                       "to 24,720 (ViT-B/32 and ViT-B/16 grids) and batch 1 and 4. Writes JSON, a markdown "
                       "table and a PNG plot.")
    p.add_argument("--full", action="store_true", help="the whole sweep (tens of minutes on CPU)")
    p.add_argument("--learner", action="store_true", help="only tokens -> embedding at ViT-B/32, 12 frames, "
                   "for every CPU route (reference, cpu-chunked, ONNX Runtime + op library, Transformers)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    p.add_argument("--stem", default=None, help="output file name without extension")
    p.add_argument("--cuda-graph", action="store_true", help="replay timed calls from CUDA graphs")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--sdpa", default="auto", choices=("auto", "flash", "cudnn", "efficient", "math"),
                   help="attention kernel for the Transformer baselines (the one that ran is recorded)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=run)


def _import_harness():
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "run.py").is_file():
        raise FileNotFoundError(f"muse-tvr bench needs the source tree: benchmarks/run.py not found under {root} "
                                "(install the package editable from a clone: pip install -e .)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import run as harness
    return harness


def run(args: argparse.Namespace) -> int:
    import torch

    harness = _import_harness()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ns = argparse.Namespace(mode="full" if args.full else ("learner" if args.learner else "quick"), device=device,
                            out=args.out or harness.RESULTS_DIR, stem=args.stem, cuda_graph=args.cuda_graph,
                            threads=args.threads, no_plot=args.no_plot, sdpa=args.sdpa)
    return harness.run_cli(ns)
