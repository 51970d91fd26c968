"""`muse-tvr serve --model M [--gallery G]`: a Triton server (PyTriton's tritonserver) on this machine
with the models muse_text, muse_video, muse_video_bytes and, with a gallery, muse_search
(muse_tvr/serve/server.py lists their inputs and outputs; docs/serving.md shows a client)."""
from __future__ import annotations

import argparse

SERVE_MODULES = ("pytriton", "tritonclient")


def register(sub: argparse._SubParsersAction) -> None:
    from . import add_model_args, non_negative, positive

    p = sub.add_parser("serve", help="serve the model over HTTP and gRPC with Triton (docs/serving.md)",
                       description="Start a Triton Inference Server (nvidia-pytriton's bundled tritonserver, "
                       "CPU or GPU) that embeds captions and videos and, with --gallery, searches it. Ctrl-C "
                       "or SIGTERM stops it.")
    add_model_args(p)
    p.add_argument("--gallery", default=None, help="gallery folder (`muse-tvr encode`): adds muse_search")
    p.add_argument("--http-port", type=non_negative, default=8000)
    p.add_argument("--grpc-port", type=non_negative, default=8001)
    p.add_argument("--metrics-port", type=non_negative, default=8002)
    p.add_argument("--max-batch-size", type=positive, default=16, help="Triton max_batch_size (default 16)")
    p.add_argument("--no-dynamic-batching", action="store_true",
                   help="run each request alone (Triton's dynamic batcher off)")
    p.add_argument("--queue-delay-us", type=non_negative, default=2000,
                   help="dynamic batcher: longest wait to fill a batch, microseconds (default 2000)")
    p.add_argument("--shm-mb", type=positive, default=64,
                   help="each Python model's shared-memory pool, initial size and growth step in MiB (default 64; "
                        "/dev/shm must hold about 4x this: docker run --shm-size)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import signal
    import sys
    import threading

    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"`muse-tvr serve` needs {', '.join(missing)}: pip install 'muse-tvr[serve]' and "
                         f"pip install --no-deps nvidia-pytriton==0.7.0 (docs/serving.md says why --no-deps)")
    from ..serve.server import (MuseInference, ServeOptions, bind_models, descendant_pids, kill_leftovers,
                                remove_shared_memory, start_triton)
    from . import build_model, model_spec, random_weights_banner

    gallery = None
    if args.gallery:
        from ..engine.gallery import Gallery, GalleryError
        gallery = Gallery.open(args.gallery)
    model, info = build_model(model_spec(args), args.threads, args.backend)
    random_weights_banner(info)
    if gallery is not None and info["fingerprint"] != gallery.model_info["fingerprint"]:
        raise GalleryError(f"the model (fingerprint {info['fingerprint'][:16]}) is not the model that encoded "
                           f"{args.gallery} ({gallery.model_info['fingerprint'][:16]}); pass the same --model "
                           f"(or --backbone/--seed) that `encode` used")
    options = ServeOptions(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                           max_batch_size=args.max_batch_size, dynamic_batching=not args.no_dynamic_batching,
                           queue_delay_us=args.queue_delay_us, shm_mb=args.shm_mb)
    stop = threading.Event()
    # Handlers first: a SIGTERM during start-up still reaches the `finally` that stops tritonserver.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    triton = start_triton(options)
    tree: set[int] = set()
    try:
        names = bind_models(triton, MuseInference(model, gallery), options)
        triton.run()
        print(f"serving {', '.join(names)} ({info['name']}, batch <= {options.max_batch_size}, dynamic batching "
              f"{'on' if options.dynamic_batching else 'off'}) on http://localhost:{options.http_port} and "
              f"grpc localhost:{options.grpc_port}; Ctrl-C stops", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            tree = descendant_pids(os.getpid())  # tritonserver and its stubs, for the clean-up below
            if not triton.is_alive():
                raise RuntimeError("tritonserver exited on its own; see its log above")
    finally:
        triton.stop()
        tree |= descendant_pids(os.getpid())
        left = kill_leftovers(tree)
        if left:
            print(f"killed {len(left)} process(es) tritonserver left behind: {left}", file=sys.stderr)
        remove_shared_memory(os.getpid())
        print("stopped", file=sys.stderr, flush=True)
    return 0
