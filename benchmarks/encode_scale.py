"""Encode throughput: one process (`muse-tvr encode`) vs Ray Data (`muse-tvr encode --ray local
--workers 2`), on generated clips, per backbone; also checks the two galleries agree.

  python benchmarks/encode_scale.py --clips 16 --backbones tiny,ViT-B/32 --out benchmarks/results/encode-scale.json

Each run is a fresh `muse-tvr encode` process into a new gallery, timed from start to exit (model build,
Ray start-up and worker start-up included: what a user waits for); `videos_per_s` = clips / wall.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def by_key(gdir) -> dict:
    from muse_tvr.engine.gallery import Gallery

    g = Gallery.open(gdir)
    return dict(zip((e["key"] for e in g.entries()), g.embeddings()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=4, help="clip length (4 s at 25 fps: 4 sampled frames)")
    ap.add_argument("--backbones", default="tiny,ViT-B/32")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_video import make_clip

    exe = [sys.executable, "-m", "muse_tvr.cli", "encode"]
    res = {"date": time.strftime("%Y-%m-%d"), "clips": args.clips, "clip_seconds": args.seconds,
           "host": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start", "runs": []}
    with tempfile.TemporaryDirectory(prefix="encode-scale-") as tmp:
        vids = Path(tmp) / "videos"
        vids.mkdir()
        for i in range(args.clips):
            make_clip(vids / f"clip{i:03d}.mp4", args.seconds, 25, seed=i)
        for bb in args.backbones.split(","):
            galleries = {}
            for mode, extra in (("1 process", []), ("ray, 2 workers", ["--ray", "local", "--workers", "2"])):
                g = Path(tmp) / f"g-{bb.replace('/', '')}-{len(galleries)}"
                wall = run(exe + [str(vids), "--out", str(g), "--backbone", bb, "--batch-size", "4", *extra])
                galleries[mode] = by_key(g)
                r = {"backbone": bb, "mode": mode, "wall_s": round(wall, 1),
                     "videos_per_s": round(args.clips / wall, 3)}
                res["runs"].append(r)
                print(r, file=sys.stderr, flush=True)
            a, b = galleries.values()
            assert sorted(a) == sorted(b)
            res["runs"][-1]["max_abs_diff_vs_1_process"] = float(max(np.abs(a[k] - b[k]).max() for k in a))
            Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
