"""ANN index vs exact scan on a synthetic clustered gallery: build time and peak RSS, per-query latency
p50/p99, recall@10 against the exact scan.

  python benchmarks/ann_search.py --rows 1000000 --work /tmp/annbench-1m --out benchmarks/results/ann-1m.json

The gallery (raw embeddings, keys v00000000...) is generated in chunks straight into gallery shards, so
memory stays at one chunk. Points come from two levels of clusters, so that a query has true near
neighbours (as video embeddings of similar clips do) rather than the equidistant crowd of uniform random
vectors: rows // 2000 unit centres c; 20 sub-centres each, s = normalize(c + 0.8 g); a row is
normalize(s + noise g') with g, g' ~ N(0, I/dim) (norm ~1), noise 0.5 by default. Queries are fresh draws of the same process.

Each index build runs as its own `muse-tvr index build` process under /usr/bin/time -v (its peak RSS
is that process's). Exact latency is measured on `--exact-queries` single-query scans (each one reads
the whole gallery); the ground truth for recall is one batched exact scan of all queries.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Clusters:
    """The two-level cluster process; every chunk is a pure function of (seed, chunk number)."""

    def __init__(self, rows: int, dim: int, seed: int = 0, per_centre: int = 2000, subs: int = 20,
                 noise: float = 0.5):
        rng = np.random.default_rng(seed)
        n_c = max(1, rows // per_centre)
        c = rng.standard_normal((n_c, dim), dtype=np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        s = np.repeat(c, subs, axis=0) + 0.8 * rng.standard_normal((n_c * subs, dim), dtype=np.float32) / np.sqrt(dim)
        self.subs = s / np.linalg.norm(s, axis=1, keepdims=True)
        self.dim, self.seed, self.noise = dim, seed, noise

    def draw(self, n: int, stream: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream])
        x = self.subs[rng.integers(len(self.subs), size=n)]
        x = x + self.noise * rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_gallery(root: Path, rows: int, dim: int, gen: Clusters, chunk: int = 131072) -> float:
    from tqdm import tqdm

    from muse_tvr.engine.gallery import Gallery
    from muse_tvr.engine.gallery_io import RAW_INFO

    if (root / "gallery.json").is_file():
        g = Gallery.open(root)
        if len(g) == rows and g.dim == dim:
            log(f"reusing {root} ({rows} rows)")
            return float("nan")
        shutil.rmtree(root)
    t0 = time.perf_counter()
    with Gallery.create_or_open(root, RAW_INFO, dim) as g, tqdm(total=rows, unit="row", unit_scale=True,
                                                                 desc="generate", file=sys.stderr) as bar:
        for i, a in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - a)
            g.add(gen.draw(n, stream=1 + i), [{"key": f"v{r:08d}"} for r in range(a, a + n)])
            bar.update(n)
    return time.perf_counter() - t0


def timed_build(root: Path, kind: str, extra: list[str]) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "muse_tvr.cli", "index", "build", "--gallery",
           str(root), "--kind", kind, *extra]
    log(" ".join(cmd[2:]))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"index build failed: {p.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    meta = json.loads((root / "index.json").read_text())
    return {"kind": kind, "factory": meta["factory"], "build_s": round(wall, 1),
            "peak_rss_mib": round(rss_kb / 1024), "index_mib": round(meta["index_bytes"] / 2 ** 20, 1)}


def latencies(fn, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    times, rows = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, r = fn(q[None])
        times.append(time.perf_counter() - t0)
        rows.append(r[0])
    return times, np.stack(rows)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def summary(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "n": len(ms)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=10)
    ap.add_argument("--kinds", default="ivf-pq,flat,hnsw")
    ap.add_argument("--nprobes", default="8,16,32,64")
    ap.add_argument("--efs", default="32,64,128")
    ap.add_argument("--work", required=True, help="scratch folder for the gallery (multi-GB: use /tmp)")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--keep", action="store_true", help="keep the generated gallery")
    ap.add_argument("--noise", type=float, default=0.5,
                    help="row noise around its sub-centre (larger: flatter neighbourhoods, harder for ANN)")
    args = ap.parse_args()

    from muse_tvr.engine import ann_index
    from muse_tvr.engine.gallery import Gallery

    k = 10
    work = Path(args.work)
    root = work / "gallery"
    gen = Clusters(args.rows, args.dim, noise=args.noise)
    res = {"rows": args.rows, "dim": args.dim, "k": k, "noise": args.noise, "date": time.strftime("%Y-%m-%d"),
           "host": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start", "kinds": []}
    res["generate_s"] = round(make_gallery(root, args.rows, args.dim, gen), 1)
    g = Gallery.open(root)
    q = gen.draw(args.queries, stream=10 ** 6)
    log("ground truth: one batched exact scan")
    t0 = time.perf_counter()
    _, truth, _ = ann_index.search(g, q, k, chunk_rows=65536, exact=True)
    res["exact_batched_s"] = round(time.perf_counter() - t0, 1)
    log(f"exact single-query latency x{args.exact_queries}")
    times, found = latencies(lambda x: ann_index.search(g, x, k, chunk_rows=65536, exact=True)[:2],
                             q[:args.exact_queries])
    assert recall(found, truth[:args.exact_queries]) == 1.0
    res["exact"] = summary(times)
    log(f"exact: {res['exact']}")
    out = Path(args.out)

    def save():
        out.write_text(json.dumps(res, indent=1))

    save()
    for kind in args.kinds.split(","):
        entry = timed_build(root, kind, [])
        log(f"built: {entry}")
        g = Gallery.open(root)
        loaded = ann_index.load_index(g)
        assert loaded is not None, "the index just built is not fresh"
        index, meta = loaded
        sweep = [("nprobe", int(v)) for v in args.nprobes.split(",")] if kind == "ivf-pq" else \
                [("ef", int(v)) for v in args.efs.split(",")] if kind == "hnsw" else [(None, None)]
        entry["runs"] = []
        for name, value in sweep:
            kw = {name: value} if name else {}
            ann_index.index_search(g, index, meta, q[:5], k, **kw)  # warm: pages of the index and shards
            times, found = latencies(lambda x: ann_index.index_search(g, index, meta, x, k, **kw), q)
            run = {"param": f"{name}={value}" if name else "-", **summary(times),
                   "recall@10": round(recall(found, truth), 4),
                   "speedup_vs_exact_p50": round(res["exact"]["p50_ms"] / max(summary(times)["p50_ms"], 1e-6), 1)}
            entry["runs"].append(run)
            log(f"{kind} {run}")
        res["kinds"].append(entry)
        del index, loaded
        ann_index._CACHE.clear()
        save()
    if not args.keep:
        shutil.rmtree(work)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
