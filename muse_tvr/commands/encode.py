"""`muse-tvr encode VIDEOS_OR_DIRS --out GALLERY`: encode videos into a resumable gallery
(`encode_into_gallery`, which `evaluate` also uses)."""
from __future__ import annotations

import argparse
import os
import sys

from . import add_model_args, build_model, model_spec, non_negative, positive, random_weights_banner


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode video files / folders into a gallery (resumable)",
                       description="Decode, sample (1 frame/s, at most max_frames), and embed videos into "
                       "a gallery folder. Rerunning skips videos already encoded with the same model; "
                       "unreadable files are reported by name and skipped.")
    p.add_argument("inputs", nargs="+", help="video files, folders of videos, or folders of frame images")
    p.add_argument("--out", required=True, help="gallery folder (created if missing)")
    add_model_args(p)
    p.add_argument("--batch-size", type=positive, default=8, help="videos per model call and per saved shard")
    p.add_argument("--workers", type=non_negative, default=2, help="decoding threads (default 2)")
    p.add_argument("--strict", action="store_true", help="refuse truncated videos (decoded short of their declared length) and exit with "
                        "status 1 if any file was skipped")
    p.set_defaults(func=run)


def _decode_ahead(paths, load, workers: int, window: int):
    """Yield (path, SampledVideo or exception) in input order, decoding up to `window` videos ahead on
    `workers` threads (PyAV releases the GIL while decoding) without queueing the whole list."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def safe(p):
        try:
            return load(p)
        except Exception as e:  # reported per file by the caller
            return e

    if workers <= 0:
        for p in paths:
            yield p, safe(p)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        it = iter(paths)
        for p in it:
            pending.append((p, pool.submit(safe, p)))
            if len(pending) >= window:
                break
        while pending:
            p, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(safe, nxt)))
            yield p, fut.result()


def encode_into_gallery(model, info: dict, paths, gallery_dir, batch_size: int = 8, workers: int = 2,
                        progress: bool = True, log=None, strict: bool = False) -> dict:
    """Encode `paths` (files or frame folders) into the gallery at `gallery_dir`, skipping those already
    encoded with this model. Each batch is saved durably before the next one starts.

    Returns {"encoded": [keys], "skipped": [keys already present], "failed": {path: reason},
             "gallery": Gallery (closed)}."""
    import numpy as np
    import torch
    from pathlib import Path

    from tqdm import tqdm

    from ..engine.gallery import Gallery, file_key
    from ..engine.video import VideoError, load_video

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg = model.config
    gallery = Gallery.create_or_open(gallery_dir, info, cfg.embed_dim)
    result = {"encoded": [], "skipped": [], "failed": {}}
    try:
        latest = gallery.latest()
        todo = []
        for p in paths:
            try:
                k = file_key(p)
            except OSError as e:
                result["failed"][str(p)] = f"cannot stat: {e}"
                continue
            old = latest.get(k["key"])
            if old and old[1].get("size") == k["size"] and old[1].get("mtime_ns") == k["mtime_ns"]:
                result["skipped"].append(k["key"])
            else:
                todo.append((p, k))
        size = cfg.vision.image_size
        keys = {str(p): k for p, k in todo}

        def load(p):
            return load_video(str(p), size=size, max_frames=cfg.max_frames, strict=strict)

        batch: list = []

        def flush():
            if not batch:
                return
            frames = torch.stack([b[1][0] for b in batch])
            mask = torch.stack([b[1][1] for b in batch])
            emb = model.encode_video(frames, mask).numpy().astype(np.float32)
            gallery.add(emb, [b[2] for b in batch])
            result["encoded"].extend(b[2]["key"] for b in batch)
            bar.update(len(batch))  # counted once saved, so the bar shows durable progress
            batch.clear()

        bar = tqdm(total=len(todo), unit="video", desc="encode", disable=not progress, file=sys.stderr)
        for p, sampled in _decode_ahead([p for p, _ in todo], load, workers, window=2 * batch_size):
            if isinstance(sampled, Exception):
                if not isinstance(sampled, (VideoError, OSError)):
                    sampled = f"{p}: unexpected {type(sampled).__name__}: {sampled}"
                result["failed"][str(p)] = str(sampled)
                bar.write(f"skipped: {sampled}", file=sys.stderr)
                bar.update(1)
            else:
                k = keys[str(p)]
                entry = {**k, "path": os.path.abspath(p), "kind": sampled.kind, "duration": sampled.duration,
                         "fps": sampled.fps, "frame_count": sampled.frame_count,
                         "frames_used": len(sampled.indices), "indices": sampled.indices,
                         "truncated": bool(sampled.truncated)}
                batch.append((p, sampled.model_input(cfg.max_frames), entry))
                if len(batch) >= batch_size:
                    flush()
        flush()
        bar.close()
        if result["failed"]:
            gallery.record_failures({str(Path(k).resolve()): v for k, v in result["failed"].items()})
        gallery.compact()
    finally:
        gallery.close()
    result["gallery"] = gallery
    return result


def run(args: argparse.Namespace) -> int:
    from ..engine.video import find_videos

    videos, ignored = find_videos(args.inputs)
    if not videos:
        raise ValueError(f"no videos found in {args.inputs} (looked for video files and frame folders)")
    model, info = build_model(model_spec(args), args.threads, args.backend)
    random_weights_banner(info)
    print(f"model {info['name']} fingerprint {info['fingerprint'][:16]} "
          f"(hashed in {info['fingerprint_seconds']:.2f} s), backend {model.resolved_backend().name}; "
          f"{len(videos)} inputs -> {args.out}",
          file=sys.stderr)
    if ignored:
        print(f"ignored {len(ignored)} file(s) without a video/image extension, e.g. {ignored[0]}",
              file=sys.stderr)
    res = encode_into_gallery(model, info, videos, args.out, args.batch_size, args.workers,
                              strict=args.strict)
    g = res["gallery"]
    print(f"encoded {len(res['encoded'])}, already in gallery {len(res['skipped'])}, "
          f"failed {len(res['failed'])}; gallery {args.out} holds {len(g)} videos")
    if res["failed"]:
        print(f"{len(res['failed'])} file(s) could not be encoded and were skipped:", file=sys.stderr)
        for path, reason in res["failed"].items():
            print(f"  {reason}" if str(reason).startswith(path) else f"  {path}: {reason}", file=sys.stderr)
    return 1 if (args.strict and res["failed"]) else 0
