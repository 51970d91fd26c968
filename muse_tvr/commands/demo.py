"""`muse-tvr demo`: the embedded default job. Builds a MUSE model (ViT-B/32 unless told otherwise),
encodes a few synthetic clips and captions, prints the text-to-video ranking and per-stage latency."""
from __future__ import annotations

import argparse

CAPTIONS = ["a red square slides from left to right",
            "a blue ball bounces up and down",
            "green and yellow stripes flicker"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="encode synthetic clips and captions, print ranking and latency")
    from . import add_model_args
    add_model_args(p)
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
    import sys
    import time

    import torch

    from ..engine.preprocess import normalize, pad_frames
    from ..engine.sequence import pool_frames, readout
    from ..engine.tokenizer import ClipTokenizer
    from . import build_model, model_spec, random_weights_banner

    model, info = build_model(model_spec(args), args.threads, args.backend)
    random_weights_banner(info, sys.stdout)
    cfg = model.config
    size, t_max = cfg.vision.image_size, cfg.max_frames
    lengths = [t_max, t_max, max(1, t_max * 2 // 3)]  # the last clip is short: exercises padding
    clips, masks = [], []
    for kind, n in enumerate(lengths):
        f, m = pad_frames(normalize(synthetic_clip(kind, n, size)), t_max)
        clips.append(f)
        masks.append(m)
    frames, mask = torch.stack(clips), torch.stack(masks)
    backend = model.resolved_backend(frames.device)  # builds the C++ scan here on its first use
    print(f"model {cfg.name}: {len(clips)} clips x {t_max} frames (real frames {lengths}), "
          f"sequence length {cfg.sequence_length()}, torch threads {torch.get_num_threads()}, "
          f"head backend {backend.name}")

    timings = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        timings[name] = time.perf_counter() - t0
        return out

    with torch.no_grad():
        model.check_frames(frames, mask)
        tokens = timed("CLIP visual", model.encode_frames, frames)
        if backend.learner is not None:
            # A whole-learner route (ONNX Runtime): the first call exports and opens the graph.
            video = timed(f"learner ({backend.name}, 1st call)", model.encode_tokens, tokens, mask)
            video = timed(f"learner ({backend.name})", model.encode_tokens, tokens, mask)
        else:  # the stages of MuseModel.encode_tokens, timed one by one
            seq = timed("pyramid + sequence", model.pyramid, tokens.to(model.head_dtype), backend)
            out = timed("Mamba head", model.head, seq, backend)
            video = timed("readout + pooling", lambda s: pool_frames(readout(s, t_max, cfg.head.order), mask), out)
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
