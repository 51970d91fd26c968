"""`muse-tvr pyramid-sidecar`: recreate the pyramid weights a reference-trained checkpoint lacks.

The reference code never saves its pyramid (see muse_tvr/engine/sidecar.py for why and how the weights
are recreated); this writes them as a safetensors sidecar next to such a checkpoint.
"""
from __future__ import annotations

import argparse
import os

BACKBONES = ("ViT-B/32", "ViT-B/16")  # the CLIP models the reference can load


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pyramid-sidecar",
        help="recreate the (unsaved) pyramid weights of a reference-trained MUSE checkpoint",
        description="Replay the reference constructor's CPU-generator draws from the seed up to the "
                    "pyramid and write the pyramid's initial weights as a safetensors sidecar.")
    from . import parse_seed
    p.add_argument("--seed", type=parse_seed, default=42, help="the training run's --seed (reference default: 42)")
    p.add_argument("--backbone", choices=BACKBONES, default="ViT-B/32",
                   help="the run's --pretrained_clip_name (default: ViT-B/32)")
    p.add_argument("--out", required=True, help="path of the .safetensors file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # torch and the engine load here, not at import, so that `muse-tvr --help` stays fast.
    from ..engine.config import get_config
    import torch

    from ..engine.sidecar import (CAVEATS, CHECKED_TORCH_VERSIONS, REFERENCE_COMMIT, make_pyramid_sidecar,
                                  parameter_count, save_sidecar)

    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a directory: give the path of the .safetensors file to write "
                         f"(e.g. {os.path.join(args.out, 'pyramid.safetensors')})")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output directory does not exist: {out_dir}")
    config = get_config(args.backbone)
    state = make_pyramid_sidecar(config, seed=args.seed)
    checksum = save_sidecar(state, args.out, meta={
        "seed": args.seed,
        "backbone": config.name,
        "reference": f"hrtang22/MUSE@{REFERENCE_COMMIT}",
    })
    print(f"wrote {args.out}: {len(state)} tensors, {parameter_count(state):,} parameters "
          f"({config.name}, seed {args.seed})")
    print(f"sha256 {checksum}")
    print("caveats:")
    for line in CAVEATS:
        print(f"  - {line}")
    running = torch.__version__.split("+")[0]
    if running not in CHECKED_TORCH_VERSIONS:
        # Not an error: the initialisers are long-stable, but this exact version was never compared.
        print(f"  - This torch ({torch.__version__}) is not one of the checked versions; compare the sha256 "
              f"above with one made on a checked version before trusting it.")
    return 0
