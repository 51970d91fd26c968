"""`muse-tvr evaluate --videos DIR --captions CSV`: MSR-VTT-style retrieval metrics.

Each caption row i pairs a sentence with video `DIR/<video_id>.<ext>`; the similarity matrix has one
row per caption and one column per caption row's video, so the match of row i is column i, as in the
reference's MSR-VTT 1k-A evaluation. Videos are encoded once into a cache gallery (resumable), texts in
batches; metrics are CLIP4Clip's `compute_metrics` on sim (text-to-video) and sim.T (video-to-text).
"""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from . import add_model_args

    p = sub.add_parser("evaluate", help="text-video retrieval metrics on an MSR-VTT style caption list")
    p.add_argument("--videos", required=True, help="folder holding <video_id>.mp4/.webm/... files")
    p.add_argument("--captions", required=True, help="CSV with columns video_id and sentence "
                   "(MSR-VTT 1k-A test: key,vid_key,video_id,sentence)")
    p.add_argument("--cache", default=None, help="gallery folder caching the video embeddings "
                   "(default: .muse-tvr-cache/<model fingerprint> in the current folder)")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="videos per model call")
    p.add_argument("--text-batch", type=int, default=256, help="captions per text-encoder call")
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--json", action="store_true", help="print JSON (metrics and per-caption ranks)")
    p.set_defaults(func=run)


def unsafe_video_id(video_id: str) -> str | None:
    """Why `video_id` could name a file outside the videos folder (None when it cannot)."""
    import os
    from pathlib import PurePosixPath, PureWindowsPath

    if os.path.isabs(video_id) or PureWindowsPath(video_id).is_absolute() or video_id.startswith(("/", "\\")):
        return "is an absolute path"
    parts = set(PurePosixPath(video_id.replace("\\", "/")).parts)
    if ".." in parts:
        return "climbs out with '..'"
    if "\0" in video_id:
        return "contains a NUL byte"
    return None


def check_video_ids(pairs: list[tuple[str, str]], captions) -> None:
    """Refuse caption rows whose video_id would be read from outside --videos (row 2 is the first
    data row, after the header)."""
    for line, (vid, _) in enumerate(pairs, start=2):
        why = unsafe_video_id(vid)
        if why:
            raise ValueError(f"{captions}:{line}: video_id {vid!r} {why}; ids must name files inside --videos")


def find_video_file(folder, video_id: str):
    from pathlib import Path

    from ..engine.video import VIDEO_EXTENSIONS

    why = unsafe_video_id(video_id)
    if why:
        raise ValueError(f"video_id {video_id!r} {why}; ids must name files inside {folder}")
    folder = Path(folder)
    for ext in VIDEO_EXTENSIONS:
        p = folder / f"{video_id}{ext}"
        if p.is_file():
            return p
    p = folder / video_id  # a folder of frame images named like the video
    return p if p.is_dir() else None


def evaluate(model, info: dict, videos_dir, pairs: list[tuple[str, str]], cache_dir,
             batch_size: int = 8, text_batch: int = 256, workers: int = 2, progress: bool = True) -> dict:
    """Metrics for (video_id, sentence) pairs. Raises ValueError naming videos that are missing or
    could not be decoded (a retrieval metric over a partial set would not be comparable)."""
    import numpy as np
    import torch

    from ..engine.gallery import Gallery, file_key
    from ..engine.retrieval import retrieval_metrics
    from ..engine.tokenizer import ClipTokenizer
    from . import encode_into_gallery

    ids = list(dict.fromkeys(v for v, _ in pairs))
    files = {v: find_video_file(videos_dir, v) for v in ids}
    missing = [v for v, f in files.items() if f is None]
    if missing:
        raise FileNotFoundError(f"{len(missing)} video(s) of the caption list are not in {videos_dir}: "
                                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    res = encode_into_gallery(model, info, [files[v] for v in ids], cache_dir, batch_size, workers, progress)
    if res["failed"]:
        raise ValueError("cannot evaluate, these videos failed to decode: "
                         + "; ".join(str(r) for r in res["failed"].values()))
    gallery = Gallery.open(cache_dir)
    latest = gallery.latest()
    rows = [latest[file_key(files[v])["key"]][0] for v, _ in pairs]
    video = torch.from_numpy(gallery.embeddings(rows))
    tok = ClipTokenizer()
    text = torch.cat([model.encode_text(tok([s for _, s in pairs[i:i + text_batch]], model.config.max_words))
                      for i in range(0, len(pairs), text_batch)])
    with torch.no_grad():
        sim = model.similarity(text, video).numpy()
    metrics = retrieval_metrics(sim)
    duplicates = len(pairs) - len(ids)
    return {"captions": len(pairs), "videos": len(ids), "duplicate_video_rows": duplicates,
            "encoded_now": len(res["encoded"]), "from_cache": len(res["skipped"]),
            "t2v": metrics["t2v"], "v2t": metrics["v2t"], "sim": sim.astype(np.float32)}


def _check_cache_model(cache, info: dict) -> None:
    """Refuse a --cache gallery of another model here, where the message can name --cache."""
    import json
    import os

    manifest = os.path.join(cache, "gallery.json")
    if not os.path.isfile(manifest):
        return
    try:
        with open(manifest, encoding="utf-8") as f:
            have = json.load(f)["model"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # a damaged manifest is reported by the gallery itself
    if have != info["fingerprint"]:
        raise ValueError(f"--cache {cache} holds embeddings of another model (fingerprint {have[:16]}..., "
                         f"not {info['fingerprint'][:16]}...): use another --cache folder, or delete this "
                         f"one to re-encode")


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from ..engine.retrieval import format_metrics, read_caption_csv
    from . import build_model, model_spec, random_weights_banner

    pairs = read_caption_csv(args.captions)
    check_video_ids(pairs, args.captions)
    if not os.path.isdir(args.videos):
        raise FileNotFoundError(f"videos folder not found: {args.videos}")
    model, info = build_model(model_spec(args), args.threads, args.backend)
    random_weights_banner(info)
    cache = args.cache or os.path.join(".muse-tvr-cache", info["fingerprint"][:16])
    _check_cache_model(cache, info)
    out = evaluate(model, info, args.videos, pairs, cache, args.batch_size, args.text_batch, args.workers)
    random_parts = [k for k, v in info["weight_sources"].items() if v == "random"]
    if out["duplicate_video_rows"]:
        print(f"note: {out['duplicate_video_rows']} caption rows reuse a video; as in the reference each row "
              f"keeps its own column, so identical columns tie (ties count as in compute_metrics)",
              file=sys.stderr)
    if args.json:
        out.pop("sim")
        print(json.dumps({"model": info["name"], "fingerprint": info["fingerprint"],
                          "backend": model.resolved_backend().name,
                          "random_weights": random_parts, "cache": cache, **out}, indent=2))
        return 0
    label = "  (RANDOM WEIGHTS: not meaningful)" if random_parts else ""
    print(f"{out['captions']} captions x {out['videos']} videos, model {info['name']}{label}, "
          f"backend {model.resolved_backend().name}; "
          f"encoded {out['encoded_now']}, cached {out['from_cache']} ({cache})")
    print(format_metrics("text-to-video", out["t2v"]))
    print(format_metrics("video-to-text", out["v2t"]))
    return 0
