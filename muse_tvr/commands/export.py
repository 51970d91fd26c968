"""`muse-tvr export onnx`: write ONNX files of the video encoder, the MUSE head and the text encoder.
`muse-tvr export triton-repo`: a Triton model repository (muse_tvr/serve/triton_repo.py, docs/serving.md)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..export.graph import PYRAMID_MODES
    from ..export.onnx_export import DEFAULT_OPSET, DTYPES, PARTS, VARIANTS
    from . import add_model_args

    p = sub.add_parser("export", help="export a model (ONNX; see docs/onnx.md)")
    fmt = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    o = fmt.add_parser("onnx", help="ONNX files with muse custom-op nodes, three variants, JSON sidecars")
    add_model_args(o, backend=False)  # `compare` rebuilds the same model from the same options
    o.add_argument("--out", required=True, help="output directory")
    o.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    o.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES))
    o.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    o.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    o.add_argument("--pyramid", default="decomposed", choices=PYRAMID_MODES,
                   help="pyramid as standard ONNX ops (default) or one MusePyramidSequence node")
    o.add_argument("--no-aot", action="store_true", help="plugin variants get aot=0 (TensorRT JIT plugin)")
    o.add_argument("--verify", action="store_true",
                   help="after export, compare PyTorch vs ORT (op library and portable) like `muse-tvr compare`"
                        " and fail if they disagree beyond tolerance")
    o.set_defaults(func=run)

    from ..serve.triton_repo import KINDS, VIDEO_VARIANTS
    from . import positive
    r = fmt.add_parser("triton-repo", help="a Triton model repository: ONNX Runtime text/video models, Python "
                       "tokenizer/video-decode models and ensembles, a TensorRT plan model when --plan is given")
    add_model_args(r, backend=False)
    r.add_argument("--out", required=True, help="repository folder to create (must be new or empty)")
    r.add_argument("--max-batch-size", type=positive, default=16, help="max_batch_size of every model (16)")
    r.add_argument("--kind", default="cpu", choices=KINDS, help="instance_group kind of the ONNX models")
    r.add_argument("--instances", type=positive, default=1, help="instance_group count per model (1)")
    r.add_argument("--video-variant", default="oplib", choices=VIDEO_VARIANTS,
                   help="oplib (default): the C++ scan library via model_operations (`make -C cpp`); "
                        "portable: no library, ONNX Runtime inlines the scan's function body (slower)")
    r.add_argument("--op-library", default=None, help="the op library to copy (default cpp/build/libmuse_ort_ops.so)")
    r.add_argument("--server-path", default=None,
                   help="the repository's path on the server, for op_library_filename (default: --out's "
                        "absolute path; e.g. /models when mounted with docker -v REPO:/models)")
    r.add_argument("--plan", default=None, help="a TensorRT plan of the video graph (`muse-tvr build-engine`): "
                   "adds muse_video_trt")
    r.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    r.set_defaults(func=run_triton_repo)


EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")


def require_export_extra(command: str) -> None:
    """Fail with the install line when the `[export]` extra's packages are missing."""
    import importlib.util

    missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"`muse-tvr {command}` needs {', '.join(missing)}: install the export extra "
                         f"with  pip install 'muse-tvr[export]'")


def run(args: argparse.Namespace) -> int:
    import os

    from . import build_model, model_spec, random_weights_banner

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file: give a directory for the exported files")
    require_export_extra("export")
    from ..export.onnx_export import export_all

    model, info = build_model(model_spec(args), args.threads)
    random_weights_banner(info)
    files = export_all(model, args.out, args.parts, args.dtype, args.variants, args.opset, args.pyramid,
                       aot=not args.no_aot, fingerprint=info["fingerprint"])
    print(f"{len(files)} files in {args.out}")
    if args.verify:
        from .compare import compare_files
        compare_files(model, files)
    return 0


def run_triton_repo(args: argparse.Namespace) -> int:
    from . import build_model, model_spec, random_weights_banner

    if args.server_path and not args.server_path.startswith("/"):
        raise ValueError(f"--server-path {args.server_path} must be absolute (tritonserver dlopens the library)")
    require_export_extra("export triton-repo")
    from ..serve.triton_repo import RepoOptions, export_triton_repo

    model, info = build_model(model_spec(args), args.threads)
    random_weights_banner(info)
    options = RepoOptions(max_batch_size=args.max_batch_size, kind=args.kind, instances=args.instances,
                          video_variant=args.video_variant, server_path=args.server_path)
    names = export_triton_repo(model, args.out, options, plan=args.plan, op_library=args.op_library,
                               opset=args.opset, fingerprint=info["fingerprint"])
    print(f"Triton repository {args.out}: {', '.join(names)}")
    return 0
