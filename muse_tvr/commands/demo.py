"""`muse-tvr demo`: the embedded default job (`make run`).

By default it loads the shipped, trained model `synthetic-shapes`, renders a few clips of the synthetic
world (muse_tvr/engine/synthetic.py) to video files in a temporary folder, and encodes them through the
real pipeline from the files (PyAV decode, frame sampling, CLIP, pyramid, Mamba head, pooling). It prints
the text-to-video ranking for the clips' captions with the correct clip marked, then the per-stage
latency of a ViT-B/32 MUSE on RANDOM weights (timing only; `--no-latency` skips it).

With --model or --backbone it ranks the same clips with that model (random weights are announced) and
times that model's stages instead.
"""
from __future__ import annotations

import argparse

DEFAULT_MODEL = "synthetic-shapes"
# The demo's clips: pairs that differ only in the direction of motion, so the ranking shows that the
# model reads frame order, plus colour and shape changes.
DEMO_CAPTIONS = ("a red circle moves from left to right", "a red circle moves from right to left",
                 "a blue square moves up", "a blue square moves down",
                 "a yellow triangle moves from left to right", "a green triangle moves down")
DEMO_SEED = 2026


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="rank rendered clips of the synthetic world with the shipped model, "
                       "then time a ViT-B/32 MUSE's stages")
    from . import add_model_args
    add_model_args(p, default_backbone=None)
    p.add_argument("--no-latency", action="store_true",
                   help="skip the per-stage latency part (ViT-B/32 on random weights by default)")
    p.set_defaults(func=run)


def render_clips(directory, seed: int = DEMO_SEED):
    """Write one clip per DEMO_CAPTIONS entry to `directory`; returns (paths, specs)."""
    import numpy as np

    from ..engine import synthetic

    rng = np.random.default_rng(seed)
    paths, specs = [], []
    for i, cap in enumerate(DEMO_CAPTIONS):
        colour, shape, motion = cap.split(" ", 3)[1:]
        spec = synthetic.random_spec(rng, colour, shape, motion)
        paths.append(synthetic.write_clip(f"{directory}/clip{i}.mp4", spec))
        specs.append(spec)
    return paths, specs


def load_clips(paths, cfg):
    """The real input path: decode + sample each file, CLIP-normalise, pad -> frames, mask, real counts."""
    import torch

    from ..engine.video import load_video

    clips, masks, counts = [], [], []
    for p in paths:
        v = load_video(p, cfg.vision.image_size, cfg.max_frames)
        f, m = v.model_input(cfg.max_frames)
        clips.append(f)
        masks.append(m)
        counts.append(len(v.indices))
    return torch.stack(clips), torch.stack(masks), counts


def print_ranking(sims, specs, stream) -> int:
    """Per caption, the clips best first, the correct one starred; returns how many are ranked first."""
    import torch

    hits = 0
    print("\ntext -> video ranking (score = exp(logit_scale) * cosine; * = the clip rendered for the caption)",
          file=stream)
    for i, spec in enumerate(specs):
        order = torch.argsort(sims[i], descending=True).tolist()
        hits += order[0] == i
        ranked = "  ".join(f"{'*' if j == i else ' '}clip{j}={sims[i, j].item():6.2f}" for j in order)
        print(f"  {'OK ' if order[0] == i else 'MISS'} {spec.caption!r:<46} {ranked}", file=stream)
    print(f"  correct clip ranked first for {hits}/{len(specs)} captions", file=stream)
    return hits


def run(args: argparse.Namespace) -> int:
    import sys
    import tempfile

    import torch

    from ..engine.tokenizer import ClipTokenizer
    from . import build_model, model_spec, random_weights_banner

    trained_default = args.model is None and args.backbone is None
    if trained_default:
        args.model = DEFAULT_MODEL
    model, info = build_model(model_spec(args), args.threads, args.backend)
    random_weights_banner(info, sys.stdout)
    cfg = model.config
    with tempfile.TemporaryDirectory(prefix="muse-tvr-demo-") as tmp:
        paths, specs = render_clips(tmp)
        frames, mask, counts = load_clips(paths, cfg)
        backend = model.resolved_backend(frames.device)  # builds the C++ scan here on its first use
        print(f"model {cfg.name} ({'shipped, trained on this world' if trained_default else info['spec']}): "
              f"{len(specs)} rendered clips of the synthetic world (side {[s.side for s in specs]} px, "
              f"{[round(s.fps) for s in specs]} fps), decoded from files, {counts} frames sampled of "
              f"max {cfg.max_frames}; head backend {backend.name}, torch threads {torch.get_num_threads()}")
        with torch.no_grad():
            video = model.encode_video(frames, mask)
            text = model.encode_text(ClipTokenizer()([s.caption for s in specs], cfg.max_words))
            sims = model.similarity(text, video)
        print_ranking(sims, specs, sys.stdout)
        if args.no_latency:
            return 0
        if trained_default:  # the ViT-B/32 timing part runs on random weights: say so loudly
            print("\n" + "-" * 78)
            print("Per-stage latency of a ViT-B/32 MUSE (12 frames) on RANDOM weights: timing only, its scores "
                  "are not used.")
            print("-" * 78)
            args.model, args.backbone = None, "ViT-B/32"
            model, info = build_model(model_spec(args), args.threads, args.backend)
            cfg = model.config
            # Three of the same clip files: the batch the latency figures in the README and docs are quoted for.
            frames, mask, counts = load_clips(paths[:3], cfg)
        else:
            print()
        latency(model, frames, mask, counts)
    return 0


def latency(model, frames, mask, counts) -> None:
    """Time the stages of MuseModel.encode_video one by one on `model`, print them."""
    import time

    import torch

    from ..engine.model import learn
    from ..engine.synthetic import CAPTIONS
    from ..engine.tokenizer import ClipTokenizer

    cfg = model.config
    t_max = cfg.max_frames
    backend = model.resolved_backend(frames.device)
    print(f"model {cfg.name}: {len(frames)} clips x {t_max} frames (real frames {counts}), sequence length "
          f"{cfg.sequence_length()}, torch threads {torch.get_num_threads()}, head backend {backend.name}")
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
            timed(f"learner ({backend.name}, 1st call)", model.encode_tokens, tokens, mask)
            video = timed(f"learner ({backend.name})", model.encode_tokens, tokens, mask)
        else:  # MuseModel.encode_tokens' learner, each stage timed
            labels = {"pyramid": "pyramid + sequence", "head": "Mamba head", "pooling": "readout + pooling"}
            video = learn(model.pyramid, model.head, tokens.to(model.head_dtype), mask, backend,
                          stage=lambda name, fn, *a: timed(labels[name], fn, *a))
        ids = timed("tokenize", ClipTokenizer(), list(CAPTIONS[:len(frames)]), cfg.max_words)
        text = timed("CLIP text", model.encode_text, ids)
        timed("similarity", model.similarity, text, video)
    print("per-stage latency (CPU, single run, includes first-call overhead)")
    for name, sec in timings.items():
        print(f"  {name:<22}{sec * 1000:>10.1f} ms")
    print(f"  {'total':<22}{sum(timings.values()) * 1000:>10.1f} ms")
