"""`muse-tvr encode VIDEOS_OR_DIRS --out GALLERY`: encode videos into a resumable gallery."""
from __future__ import annotations

import argparse
import sys

from . import (add_model_args, build_model, encode_into_gallery, model_spec, non_negative, positive,
               random_weights_banner)


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
