"""Subcommands of the `muse-tvr` CLI, one module each, and the options and model set-up they share.

Each module defines `register(subparsers)`, which adds its parser and sets `func=run` on it; the work
imports the engine inside `run`. Random weights are seeded so that reruns build the same model and the
same fingerprint. The model set-up and the encode job themselves are engine code (`muse_tvr.engine.jobs`),
named here for the subcommands.
"""
from __future__ import annotations

import argparse
import os

from ..engine.jobs import (build_model, describe_failure, embed_batch, encode_into_gallery,  # noqa: F401
                           plan_encode, random_weights_banner, sample_for_model)

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
