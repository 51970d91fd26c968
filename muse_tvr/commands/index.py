"""`muse-tvr index build | info --gallery G`: the FAISS index that `search` uses when it is fresh."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..engine.ann_index import KINDS
    from . import non_negative, positive

    p = sub.add_parser("index", help="build or describe a gallery's ANN index (FAISS)",
                       description="An approximate index beside the gallery (index.faiss, index.json). "
                       "`search` uses it while it matches the gallery's shards and warns and scans exactly "
                       "once the gallery changed.")
    cmds = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = cmds.add_parser("build", help="train on a sample and add the gallery in chunks")
    b.add_argument("--gallery", required=True)
    b.add_argument("--kind", default="auto", choices=KINDS,
                   help="auto (default): flat up to 100k rows, else ivf-pq; hnsw: full vectors in memory")
    b.add_argument("--nlist", type=positive, default=None, help="ivf-pq: inverted lists (default ~4 sqrt(N), "
                   "a power of two, at most 4096)")
    b.add_argument("--m", type=positive, default=None,
                   help="ivf-pq: PQ bytes per row (default dim/8); hnsw: links per node (default 32)")
    b.add_argument("--train-rows", type=positive, default=None, help="ivf-pq: training sample size "
                   "(default max(64 nlist, 65536))")
    b.add_argument("--chunk-rows", type=positive, default=65536, help="rows read per step while adding")
    b.add_argument("--threads", type=non_negative, default=0, help="FAISS threads (0: its default)")
    b.set_defaults(func=run_build)
    i = cmds.add_parser("info", help="print the index description and whether it is fresh")
    i.add_argument("--gallery", required=True)
    i.set_defaults(func=run_info)


def run_build(args: argparse.Namespace) -> int:
    from ..engine.ann_index import build_index

    meta = build_index(args.gallery, args.kind, args.nlist, args.m, args.train_rows, args.chunk_rows,
                       args.threads)
    print(f"built {meta['factory']} over {meta['rows']} rows in {meta['build_seconds']:.1f} s "
          f"({meta['index_bytes'] / 2 ** 20:.1f} MiB)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    from ..engine.ann_index import index_paths
    from ..engine.gallery import Gallery

    g = Gallery.open(args.gallery)
    _, meta_path = index_paths(args.gallery)
    if not meta_path.is_file():
        print(f"{args.gallery}: no index; build one with `muse-tvr index build --gallery {args.gallery}`")
        return 1
    meta = json.loads(meta_path.read_text())
    meta["fresh"] = meta.get("gallery_state") == g.state_digest()
    print(json.dumps(meta, indent=1))
    return 0 if meta["fresh"] else 1
