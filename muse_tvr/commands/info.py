"""`muse-tvr info`: the configuration and parameter counts of a model."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from . import add_model_args

    p = sub.add_parser("info", help="print a model's config and parameter counts per part")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from . import build_model, model_spec, random_weights_banner

    model, info = build_model(model_spec(args), args.threads, args.backend)
    counts = model.parameter_counts()
    cfg = model.config
    if args.json:
        print(json.dumps({"config": cfg.to_dict(), "parameters": counts,
                          "weights": model.weight_sources,
                          "sequence_length": cfg.sequence_length(),
                          "backend": model.resolved_backend().name}, indent=2))
        return 0
    h = cfg.head
    print(f"model          {cfg.name}")
    print(f"frames x words {cfg.max_frames} x {cfg.max_words}")
    print(f"CLIP vision    {cfg.vision.image_size}px patch {cfg.vision.patch_size} grid {cfg.vision.grid}x"
          f"{cfg.vision.grid} width {cfg.vision.width} layers {cfg.vision.layers}")
    print(f"CLIP text      width {cfg.text.width} layers {cfg.text.layers} vocab {cfg.text.vocab_size}")
    print(f"pyramid        scales {list(h.scales)} -> tokens/frame {cfg.level_tokens()}")
    print(f"Mamba head     depth {h.depth} d_model {h.d_model} d_state {h.d_state} d_conv {h.d_conv} "
          f"expand {h.expand} dt_rank {h.rank} order {h.order}")
    print(f"sequence       {cfg.sequence_length()} tokens for {cfg.max_frames} frames")
    print(f"backend        {model.resolved_backend().name} (asked: {model.backend})")
    print("parameters")
    names = {"clip_visual": "CLIP visual", "clip_text": "CLIP text (+logit_scale)", "pyramid": "pyramid",
             "mamba_head": "Mamba head"}
    for k, n in counts.items():
        print(f"  {names[k]:<26}{n:>14,}")
    print(f"  {'total':<26}{sum(counts.values()):>14,}")
    print("weights        " + ", ".join(f"{k}: {v}" for k, v in model.weight_sources.items()))
    random_weights_banner(info, sys.stdout)
    return 0
