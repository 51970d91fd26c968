"""`muse-tvr search "a man is playing guitar" --gallery GALLERY -k 10`: rank gallery videos by text, or
`muse-tvr search --query-npy Q.npy --gallery GALLERY -k 10 --json` by query vectors."""
from __future__ import annotations

import argparse
import sys

from ..engine.jobs import search_gallery  # the search job itself; `run` calls it


def register(sub: argparse._SubParsersAction) -> None:
    from . import add_model_args

    p = sub.add_parser("search", help="rank the videos of a gallery for one or more text queries",
                       description="Top-k cosine search: through the gallery's FAISS index when it is fresh "
                       "(`muse-tvr index build`), else exact in bounded memory (the gallery is read in "
                       "chunks). The text encoder is the model that built the gallery unless --model is "
                       "given; its fingerprint must match the gallery's.")
    p.add_argument("queries", nargs="*", help="text queries (or give --query-npy)")
    p.add_argument("--query-npy", default=None, help="float (Q, D) .npy of query embeddings instead of text; "
                   "--json prints one list per query of {key, score}, best first")
    p.add_argument("--exact", action="store_true", help="scan exactly even when an index is present")
    p.add_argument("--nprobe", type=int, default=None, help="ivf-pq: lists visited per query (default 32)")
    p.add_argument("--ef", type=int, default=None, help="hnsw: search breadth (default 64)")
    p.add_argument("--rerank", type=int, default=None,
                   help="ivf-pq: candidates re-scored exactly (default max(20 k, 200))")
    p.add_argument("--gallery", required=True, help="gallery folder made by `muse-tvr encode`")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--chunk-rows", type=int, default=16384,
                   help="gallery rows scored per step (memory: rows x dim x 4 bytes; default 16384)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p, default_backbone=None, backend=False)  # text only: the learner never runs
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..engine.gallery import Gallery, GalleryError
    from . import build_model, model_spec, random_weights_banner

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    if bool(args.queries) == bool(args.query_npy):
        raise ValueError("give text queries or --query-npy Q.npy (one of the two)")
    gallery = Gallery.open(args.gallery)
    if args.query_npy:
        return _run_vectors(args, gallery)
    if args.model or args.backbone:
        spec = model_spec(args)
    else:
        spec = gallery.model_info.get("spec")
        if not spec:
            raise ValueError(f"{args.gallery}: the gallery does not record its model (raw embeddings have "
                             f"none); search it with --query-npy, or pass --model")
    model, info = build_model(spec, args.threads)
    random_weights_banner(info)
    if info["fingerprint"] != gallery.model_info["fingerprint"]:
        raise GalleryError(f"the text model (fingerprint {info['fingerprint'][:16]}) is not the model that "
                           f"encoded {args.gallery} ({gallery.model_info['fingerprint'][:16]}); scores would "
                           f"compare different embedding spaces")
    results = search_gallery(model, gallery, args.queries, args.k, args.chunk_rows, exact=args.exact,
                             nprobe=args.nprobe, ef=args.ef, rerank=args.rerank)
    random_parts = [k for k, v in info["weight_sources"].items() if v == "random"]
    if args.json:
        print(json.dumps({"gallery": args.gallery, "videos": len(gallery), "model": info["name"],
                          "fingerprint": info["fingerprint"], "random_weights": random_parts,
                          "results": [{"query": q, "hits": h} for q, h in zip(args.queries, results)]},
                         indent=2))
        return 0
    for q, hits in zip(args.queries, results):
        print(f"query: {q!r}  ({len(gallery)} videos{', RANDOM WEIGHTS' if random_parts else ''})")
        for h in hits:
            print(f"  {h['rank']:>3}. {h['score']:+.4f}  {h['path']}")
    return 0


def _run_vectors(args: argparse.Namespace, gallery) -> int:
    """Search with query embeddings: no model is built (any gallery, raw ones included)."""
    import json
    import time

    from ..engine import ann_index
    from ..engine.gallery_io import query_vectors

    q = query_vectors(args.query_npy)
    t0 = time.perf_counter()
    scores, rows, how = ann_index.search(gallery, q, args.k, args.chunk_rows, exact=args.exact,
                                         nprobe=args.nprobe, ef=args.ef, rerank=args.rerank)
    seconds = time.perf_counter() - t0
    results = [[{"key": gallery.entry(int(r))["key"], "score": round(float(s), 6)}
                for s, r in zip(scores[i], rows[i])] for i in range(len(q))]
    print(f"{len(q)} queries over {len(gallery)} rows via {how} in {seconds:.3f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
        return 0
    for i, hits in enumerate(results):
        print(f"query {i}:")
        for rank, h in enumerate(hits, start=1):
            print(f"  {rank:>3}. {h['score']:+.4f}  {h['key']}")
    return 0
