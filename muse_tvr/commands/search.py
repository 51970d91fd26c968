"""`muse-tvr search "a man is playing guitar" --gallery GALLERY -k 10`: rank gallery videos by text."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from . import add_model_args

    p = sub.add_parser("search", help="rank the videos of a gallery for one or more text queries",
                       description="Exact top-k cosine search in bounded memory (the gallery is read in "
                       "chunks). The text encoder is the model that built the gallery unless --model is "
                       "given; its fingerprint must match the gallery's.")
    p.add_argument("queries", nargs="+", help="text queries")
    p.add_argument("--gallery", required=True, help="gallery folder made by `muse-tvr encode`")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--chunk-rows", type=int, default=16384,
                   help="gallery rows scored per step (memory: rows x dim x 4 bytes; default 16384)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p, default_backbone=None, backend=False)  # text only: the learner never runs
    p.set_defaults(func=run)


def search_gallery(model, gallery, queries: list[str], k: int, chunk_rows: int = 16384) -> list[list[dict]]:
    """Per query, the top-k live gallery rows: dicts with rank, score (cosine), logit (the model's
    exp(logit_scale) * cosine), row and the row's metadata."""
    import math

    from ..engine.retrieval import topk_search
    from ..engine.tokenizer import ClipTokenizer

    ids = ClipTokenizer()(queries, model.config.max_words)
    text = model.encode_text(ids).numpy()
    live = gallery.live_mask() if gallery.has_superseded else None
    scores, rows = topk_search(text, gallery.iter_chunks(chunk_rows), k, live=live)
    scale = math.exp(float(model.clip.logit_scale.detach().float()))
    out = []
    for qi in range(len(queries)):
        hits = []
        for rank, (s, r) in enumerate(zip(scores[qi], rows[qi]), start=1):
            e = gallery.entry(int(r))
            hits.append({"rank": rank, "score": round(float(s), 6), "logit": round(float(s) * scale, 4),
                         "row": int(r), "path": e["path"], "duration": e.get("duration"),
                         "frames_used": e.get("frames_used")})
        out.append(hits)
    return out


def run(args: argparse.Namespace) -> int:
    import json

    from ..engine.gallery import Gallery, GalleryError
    from . import build_model, model_spec, random_weights_banner

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    gallery = Gallery.open(args.gallery)
    if args.model or args.backbone:
        spec = model_spec(args)
    else:
        spec = gallery.model_info.get("spec")
        if not spec:
            raise ValueError(f"{args.gallery}: the gallery does not record its model; pass --model")
    model, info = build_model(spec, args.threads)
    random_weights_banner(info)
    if info["fingerprint"] != gallery.model_info["fingerprint"]:
        raise GalleryError(f"the text model (fingerprint {info['fingerprint'][:16]}) is not the model that "
                           f"encoded {args.gallery} ({gallery.model_info['fingerprint'][:16]}); scores would "
                           f"compare different embedding spaces")
    results = search_gallery(model, gallery, args.queries, args.k, args.chunk_rows)
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
