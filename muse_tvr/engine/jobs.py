"""Jobs the commands, the server and the distributed encode share: a model from its spec (with the
fingerprint a gallery records), the random-weights banner, and the encode job with its pieces (which inputs
still need encoding, decode + sample one input, embed a batch, the single-process encode into a gallery),
and the text search of a gallery (`search_gallery`, what `muse-tvr search` and the server's muse_search run).

Heavy imports (torch, PyAV, tqdm) happen inside the functions: the CLI imports this module at start-up.
"""
from __future__ import annotations

import os
import sys


def build_model(spec: dict, threads: int = 0, backend: str = "auto"):
    """(model in eval mode, model_info dict with fingerprint) from a `model_spec`."""
    import time

    import torch

    from .config import get_config
    from .gallery import model_fingerprint
    from .weights import load_model

    if threads:
        torch.set_num_threads(threads)
    if spec.get("model"):
        model = load_model(spec["model"], spec.get("sidecar"))
    else:
        # Random weights come from the global generator: seed it so that the same command rebuilds the
        # same model (and a gallery made with it can be resumed and searched).
        state = torch.random.get_rng_state()
        torch.manual_seed(int(spec.get("seed", 0)))
        try:
            model = load_model(None, None, get_config(spec.get("backbone", "ViT-B/32")))
        finally:
            torch.random.set_rng_state(state)
    model.eval().set_backend(backend)
    t0 = time.perf_counter()
    fp = model_fingerprint(model)
    info = {"fingerprint": fp, "name": model.config.name, "weight_sources": dict(model.weight_sources),
            "spec": spec, "fingerprint_seconds": round(time.perf_counter() - t0, 3)}
    return model, info


def random_weights_banner(info: dict, stream=None) -> None:
    """Say loudly when any part of the model is random: its scores mean nothing."""
    stream = stream or sys.stderr  # looked up per call: tests and callers may swap sys.stderr
    random_parts = [k for k, v in info["weight_sources"].items() if v == "random"]
    if not random_parts:
        return
    bar = "=" * 78
    print(bar, file=stream)
    print(f"WARNING: RANDOM WEIGHTS ({', '.join(random_parts)}) in model {info['name']}"
          f" (seed {info['spec'].get('seed', '-')}).", file=stream)
    print("Embeddings, rankings and metrics from it exercise the pipeline; they are NOT meaningful.",
          file=stream)
    print("Pass --model with a muse-tvr model directory or a checkpoint for real results.", file=stream)
    print(bar, file=stream)


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


def plan_encode(gallery, paths) -> tuple[list, list, dict]:
    """Which of `paths` still need encoding into `gallery`: (todo [(path, file_key dict)], skipped
    [keys already present for the same size and mtime], failed {path: reason} for files that vanished)."""
    from .gallery import file_key

    latest = gallery.latest()
    todo, skipped, failed = [], [], {}
    for p in paths:
        try:
            k = file_key(p)
        except OSError as e:
            failed[str(p)] = f"cannot stat: {e}"
            continue
        old = latest.get(k["key"])
        if old and old[1].get("size") == k["size"] and old[1].get("mtime_ns") == k["mtime_ns"]:
            skipped.append(k["key"])
        else:
            todo.append((p, k))
    return todo, skipped, failed


def sample_for_model(path, key: dict, cfg, strict: bool = False):
    """Decode and sample one input for the model: ((frames float32 (T, 3, S, S), mask (T,)), gallery
    entry dict). Raises VideoError / OSError for a file that cannot be used."""
    from .video import load_video

    sampled = load_video(str(path), size=cfg.vision.image_size, max_frames=cfg.max_frames, strict=strict)
    entry = {**key, "path": os.path.abspath(path), "kind": sampled.kind, "duration": sampled.duration,
             "fps": sampled.fps, "frame_count": sampled.frame_count, "frames_used": len(sampled.indices),
             "indices": sampled.indices, "truncated": bool(sampled.truncated)}
    return sampled.model_input(cfg.max_frames), entry


def describe_failure(path, error: Exception) -> str:
    """The per-file reason recorded for a file that could not be encoded."""
    from .video import VideoError

    if not isinstance(error, (VideoError, OSError)):
        return f"{path}: unexpected {type(error).__name__}: {error}"
    return str(error)


def embed_batch(model, inputs) -> "np.ndarray":
    """[(frames (T, 3, S, S), mask (T,))] -> float32 (B, C) unit rows, one model call."""
    import numpy as np
    import torch

    frames = torch.stack([torch.as_tensor(f) for f, _ in inputs])
    mask = torch.stack([torch.as_tensor(m) for _, m in inputs])
    return model.encode_video(frames, mask).float().cpu().numpy().astype(np.float32)


def encode_into_gallery(model, info: dict, paths, gallery_dir, batch_size: int = 8, workers: int = 2,
                        progress: bool = True, log=None, strict: bool = False) -> dict:
    """Encode `paths` (files or frame folders) into the gallery at `gallery_dir`, skipping those already
    encoded with this model. Each batch is saved durably before the next one starts.

    Returns {"encoded": [keys], "skipped": [keys already present], "failed": {path: reason},
             "gallery": Gallery (closed)}."""
    from pathlib import Path

    from tqdm import tqdm

    from .gallery import Gallery

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg = model.config
    gallery = Gallery.create_or_open(gallery_dir, info, cfg.embed_dim)
    try:
        todo, skipped, failed = plan_encode(gallery, paths)
        result = {"encoded": [], "skipped": skipped, "failed": failed}
        keys = {str(p): k for p, k in todo}

        def load(p):
            return sample_for_model(p, keys[str(p)], cfg, strict)

        batch: list = []

        def flush():
            if not batch:
                return
            gallery.add(embed_batch(model, [b[0] for b in batch]), [b[1] for b in batch])
            result["encoded"].extend(b[1]["key"] for b in batch)
            bar.update(len(batch))  # counted once saved, so the bar shows durable progress
            batch.clear()

        bar = tqdm(total=len(todo), unit="video", desc="encode", disable=not progress, file=sys.stderr)
        for p, sampled in _decode_ahead([p for p, _ in todo], load, workers, window=2 * batch_size):
            if isinstance(sampled, Exception):
                result["failed"][str(p)] = describe_failure(p, sampled)
                bar.write(f"skipped: {result['failed'][str(p)]}", file=sys.stderr)
                bar.update(1)
            else:
                batch.append(sampled)
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


def search_gallery(model, gallery, queries: list[str], k: int, chunk_rows: int = 16384, *,
                   exact: bool = False, nprobe: int | None = None, ef: int | None = None,
                   rerank: int | None = None) -> list[list[dict]]:
    """Per query, the top-k live gallery rows: dicts with rank, score (cosine), logit (the model's
    exp(logit_scale) * cosine), row and the row's metadata. Uses the gallery's index when it is fresh
    (see `muse_tvr.engine.ann_index.search`); `exact` forces the scan."""
    import math

    from . import ann_index
    from .tokenizer import ClipTokenizer

    ids = ClipTokenizer()(queries, model.config.max_words)
    text = model.encode_text(ids).numpy()
    scores, rows, _ = ann_index.search(gallery, text, k, chunk_rows, exact=exact, nprobe=nprobe, ef=ef,
                                       rerank=rerank)
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
