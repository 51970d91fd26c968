"""Subcommands of the `muse-tvr` CLI, one module each, and the options and model set-up they share.

Each module defines `register(subparsers)`, which adds its parser and sets `func=run` on it; the work
imports the engine inside `run`. Random weights are seeded so that reruns build the same model and the
same fingerprint. `encode_into_gallery` is the encode job that `encode` and `evaluate` run.
"""
from __future__ import annotations

import argparse
import os
import sys

SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1  # the range torch.manual_seed accepts


def parse_seed(text: str) -> int:
    """argparse type for --seed: an integer torch.manual_seed accepts (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give an integer") from None
    if not SEED_MIN <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed {text} is out of range: give an integer from {SEED_MIN} "
                                         f"to {SEED_MAX}")
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give an integer >= 0")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("invalid count 0: give an integer >= 1")
    return value


def add_model_args(p: argparse.ArgumentParser, default_backbone: str | None = "ViT-B/32",
                   backend: bool = True) -> None:
    """--model, --sidecar, --backbone, --seed, --threads and (when the command runs the learner) --backend."""
    p.add_argument("--model", default=None, help="muse-tvr model directory, the shipped model "
                   "synthetic-shapes, a reference MUSE checkpoint or a CLIP file (default: RANDOM weights of "
                   "--backbone)")
    p.add_argument("--sidecar", default=None, help="pyramid sidecar for a reference checkpoint")
    p.add_argument("--backbone", default=default_backbone,
                   help="preset for a random model: ViT-B/32, ViT-B/16, ViT-L/14, tiny")
    p.add_argument("--seed", type=parse_seed, default=0,
                   help="seed for random weights, so that reruns build the same model (default 0)")
    p.add_argument("--threads", type=non_negative, default=0, help="torch CPU threads (0: torch's default)")
    if backend:
        add_backend_arg(p)


def add_backend_arg(p: argparse.ArgumentParser) -> None:
    from ..engine.backend import names
    p.add_argument("--backend", default="auto", choices=names(),
                   help="auto (default) = the fastest that runs here: triton on CUDA, cpp (the C++ scan, "
                        "built on first use) on CPU; reference = plain PyTorch; cpu-chunked = the blocked "
                        "PyTorch scan; ort = ONNX Runtime + the C++ op library (`make -C cpp`, one export)")


def model_spec(args: argparse.Namespace) -> dict:
    """How to rebuild the model; stored in the gallery so that `search` finds the same text encoder."""
    if args.model:
        from ..engine.weights import shipped_model
        # A shipped model's name stays a name (the package finds it wherever it is installed).
        return {"model": args.model if shipped_model(args.model) else os.path.abspath(args.model),
                "sidecar": os.path.abspath(args.sidecar) if args.sidecar else None}
    if args.sidecar:  # a sidecar only completes a reference checkpoint: load_model says so in one line
        from ..engine.weights import load_model
        load_model(None, args.sidecar)
    return {"backbone": args.backbone or "ViT-B/32", "seed": args.seed}


def build_model(spec: dict, threads: int = 0, backend: str = "auto"):
    """(model in eval mode, model_info dict with fingerprint) from a `model_spec`."""
    import time

    import torch

    from ..engine.config import get_config
    from ..engine.gallery import model_fingerprint
    from ..engine.weights import load_model

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
    from ..engine.gallery import file_key

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
    from ..engine.video import load_video

    sampled = load_video(str(path), size=cfg.vision.image_size, max_frames=cfg.max_frames, strict=strict)
    entry = {**key, "path": os.path.abspath(path), "kind": sampled.kind, "duration": sampled.duration,
             "fps": sampled.fps, "frame_count": sampled.frame_count, "frames_used": len(sampled.indices),
             "indices": sampled.indices, "truncated": bool(sampled.truncated)}
    return sampled.model_input(cfg.max_frames), entry


def describe_failure(path, error: Exception) -> str:
    """The per-file reason recorded for a file that could not be encoded."""
    from ..engine.video import VideoError

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

    from ..engine.gallery import Gallery

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
