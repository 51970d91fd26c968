"""`muse-tvr bench`: latency of the MUSE head vs the Transformer baselines (and the kernels) on this machine.

The harness is `muse_tvr.bench` (the checkout's benchmarks/ folder, shipped in the wheel under that name).
Results go to ./muse-tvr-bench unless --out says otherwise; the committed results are never the default.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.sdpa import BACKEND_CHOICES as SDPA_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the MUSE head against the Transformer baselines",
                       description="Quick mode (default) takes a few minutes on a 2-core CPU: head at "
                       "L = 1020 and 3060 plus one scan/conv/block/pyramid/CLIP case. --full sweeps L up "
                       "to 24,720 (ViT-B/32 and ViT-B/16 grids) and batch 1 and 4. Writes JSON, a markdown "
                       "table and a PNG plot.")
    p.add_argument("--full", action="store_true", help="the whole sweep (tens of minutes on CPU)")
    p.add_argument("--learner", action="store_true", help="only tokens -> embedding at ViT-B/32, 12 frames, "
                   "for every backend that runs here and the Transformer baselines")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--out", type=Path, default=Path("muse-tvr-bench"), help="output folder (default ./muse-tvr-bench)")
    p.add_argument("--stem", default=None, help="output file name without extension")
    p.add_argument("--cuda-graph", action="store_true", help="replay timed calls from CUDA graphs")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--sdpa", default="auto", choices=SDPA_CHOICES,
                   help="attention kernel for the Transformer baselines (the one that ran is recorded)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import run as harness
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ns = argparse.Namespace(mode="full" if args.full else ("learner" if args.learner else "quick"), device=device,
                            out=args.out, stem=args.stem, cuda_graph=args.cuda_graph,
                            threads=args.threads, no_plot=args.no_plot, sdpa=args.sdpa)
    return harness.run_cli(ns)
