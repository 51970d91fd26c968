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
    p.add_argument("--workers", type=non_negative, default=2,
                   help="decoding threads (default 2); with --ray: model actors")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="encode with Ray Data: decode on CPU workers, the model on --workers actors, each "
                        "writing its own part gallery, merged into --out at the end (resumable). ADDRESS: "
                        "local (default: start Ray on this machine), auto, or ray://HOST:PORT")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="encode only the inputs of shard I of N (0 <= I < N, split by a hash of each "
                        "resolved path): run N jobs (e.g. a Slurm array) into N --out folders, then "
                        "`muse-tvr gallery merge --gallery G PART...`")
    p.add_argument("--strict", action="store_true", help="refuse truncated videos (decoded short of their declared length) and exit with "
                        "status 1 if any file was skipped")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.video import find_videos

    if args.shard:  # a malformed option is refused before the inputs are walked
        from ..engine.distributed import parse_shard, select_shard

        i, n = parse_shard(args.shard)
    videos, ignored = find_videos(args.inputs)
    if not videos:
        raise ValueError(f"no videos found in {args.inputs} (looked for video files and frame folders)")
    if args.shard:
        total, videos = len(videos), select_shard(videos, i, n)
        print(f"shard {i}/{n}: {len(videos)} of {total} inputs", file=sys.stderr)
    if args.ray:
        return _run_ray(args, videos)
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
    return _report(args, res)


def _run_ray(args: argparse.Namespace, videos) -> int:
    from ..engine.distributed import ray_encode

    if args.workers < 1:
        raise ValueError("--ray needs --workers >= 1 (model actors)")
    print(f"ray ({args.ray}): {len(videos)} inputs -> {args.out}, {args.workers} model worker(s)",
          file=sys.stderr)
    res = ray_encode(model_spec(args), videos, args.out, args.ray, args.workers, args.batch_size,
                     strict=args.strict, threads=args.threads, backend=args.backend)
    return _report(args, res)


def _report(args: argparse.Namespace, res: dict) -> int:
    g = res["gallery"]
    print(f"encoded {len(res['encoded'])}, already in gallery {len(res['skipped'])}, "
          f"failed {len(res['failed'])}; gallery {args.out} holds {len(g)} videos")
    if res["failed"]:
        print(f"{len(res['failed'])} file(s) could not be encoded and were skipped:", file=sys.stderr)
        for path, reason in res["failed"].items():
            print(f"  {reason}" if str(reason).startswith(path) else f"  {path}: {reason}", file=sys.stderr)
    return 1 if (args.strict and res["failed"]) else 0
