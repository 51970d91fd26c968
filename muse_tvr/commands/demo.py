"""`muse-tvr demo`: the embedded default job. Builds a MUSE model (ViT-B/32 unless told otherwise),
encodes a few synthetic clips and captions, prints the text-to-video ranking and per-stage latency."""
from __future__ import annotations

import argparse

CAPTIONS = ["a red square slides from left to right",
            "a blue ball bounces up and down",
            "green and yellow stripes flicker"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="encode synthetic clips and captions, print ranking and latency")
    p.add_argument("--model", default=None, help="model directory or checkpoint (default: random weights)")
    p.add_argument("--sidecar", default=None, help="pyramid sidecar for a reference checkpoint")
    p.add_argument("--backbone", default="ViT-B/32", help="preset for a random model")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    from .encode import add_backend_arg
    add_backend_arg(p)
    p.set_defaults(func=run)


def synthetic_clip(kind: int, frames: int, size: int):
    """uint8 (T, S, S, 3) clips with simple, captionable motion."""
    import numpy as np

    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for t in range(frames):
        f = video[t]
        f[:] = 20
        if kind == 0:
            x0 = int((size - 60) * t / max(frames - 1, 1))
            f[80:140, x0:x0 + 60] = (220, 30, 30)
        elif kind == 1:
            cy = int(60 + (size - 120) * abs(np.sin(np.pi * t / 4)))
            f[(yy - cy) ** 2 + (xx - size // 2) ** 2 < 30 ** 2] = (30, 60, 220)
        else:
            stripes = ((xx // 16 + t) % 2).astype(bool)
            f[stripes] = (40, 200, 40) if t % 2 else (230, 220, 40)
    return video


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..engine.backend import resolve_backend, run_head
    from ..engine.config import get_config
    from ..engine.preprocess import normalize, pad_frames
    from ..engine.sequence import pool_frames, readout
    from ..engine.tokenizer import ClipTokenizer
    from ..engine.weights import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.sidecar, None if args.model else get_config(args.backbone)).eval()
    model.set_backend(args.backend)
    cfg = model.config
    if "random" in model.weight_sources.values():
        print("=" * 78)
        print("WARNING: RANDOM WEIGHTS for " + ", ".join(k for k, v in model.weight_sources.items()
                                                        if v == "random"))
        print("The ranking below exercises the pipeline; it is NOT a meaningful retrieval result.")
        print("Pass --model with a muse-tvr model directory or a checkpoint for real scores.")
        print("=" * 78)
    size, t_max = cfg.vision.image_size, cfg.max_frames
    lengths = [t_max, t_max, max(1, t_max * 2 // 3)]  # the last clip is short: exercises padding
    clips, masks = [], []
    for kind, n in enumerate(lengths):
        f, m = pad_frames(normalize(synthetic_clip(kind, n, size)), t_max)
        clips.append(f)
        masks.append(m)
    frames, mask = torch.stack(clips), torch.stack(masks)
    print(f"model {cfg.name}: {len(clips)} clips x {t_max} frames (real frames {lengths}), "
          f"sequence length {cfg.sequence_length()}, torch threads {torch.get_num_threads()}, "
          f"head backend {resolve_backend(model.backend, frames.device)}")

    timings = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        timings[name] = time.perf_counter() - t0
        return out

    with torch.no_grad():
        model.check_frames(frames, mask)
        tokens = timed("CLIP visual", model.encode_frames, frames)
        if resolve_backend(model.backend, frames.device) == "ort":
            # ONNX Runtime runs pyramid, blocks and pooling as one graph; the first call exports it.
            video = timed("learner (ORT, 1st call)", model.encode_tokens, tokens, mask)
            video = timed("learner (ORT)", model.encode_tokens, tokens, mask)
        else:
            seq = timed("pyramid + sequence", model.build_sequence, tokens)
            out = timed("Mamba head", run_head, model.head, seq, model.backend)
            video = timed("readout + pooling",
                          lambda s: pool_frames(readout(s, t_max, cfg.head.order), mask), out)
        tok = ClipTokenizer()
        ids = timed("tokenize", tok, CAPTIONS, cfg.max_words)
        text = timed("CLIP text", model.encode_text, ids)
        sims = timed("similarity", model.similarity, text, video)

    print("\ntext -> video ranking (score = exp(logit_scale) * cosine)")
    for i, cap in enumerate(CAPTIONS):
        order = torch.argsort(sims[i], descending=True).tolist()
        ranked = "  ".join(f"clip{j}={sims[i, j].item():.2f}" for j in order)
        print(f"  {cap!r:<45} {ranked}")
    print("\nper-stage latency (CPU, single run, includes first-call overhead)")
    for name, sec in timings.items():
        print(f"  {name:<22}{sec * 1000:>10.1f} ms")
    print(f"  {'total':<22}{sum(timings.values()) * 1000:>10.1f} ms")
    return 0
