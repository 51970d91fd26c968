"""`muse-tvr build-engine MODEL.onnx --plan OUT.plan`: a TensorRT engine plan from an exported ONNX file."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engine", help="build a TensorRT engine plan from an exported ONNX file (needs TensorRT + GPU)",
        description="Build a TensorRT plan. Custom BiSelectiveScan nodes become AOT plugins whose Triton PTX "
                    "is baked into the plan, so the plan runs in plain C++ TensorRT (cpp/trt_runner, trtexec). "
                    "Needs TensorRT >= 10.9 with Python bindings and an NVIDIA GPU; see docs/tensorrt.md.")
    p.add_argument("onnx", help="exported ONNX file, e.g. head.plugin.float16.onnx")
    p.add_argument("--plan", required=True, help="output engine plan file")
    p.add_argument("--batch", default="1,8,32", help="batch MIN,OPT,MAX for the optimisation profile (default 1,8,32)")
    p.add_argument("--frames", default=None,
                   help="frames MIN,OPT,MAX (default 1,T,T with T the model's max_frames from the export sidecar)")
    p.add_argument("--min", dest="min_shapes", default=None, help="trtexec-style shapes name:AxBxC,... (override)")
    p.add_argument("--opt", dest="opt_shapes", default=None, help="trtexec-style optimum shapes")
    p.add_argument("--max", dest="max_shapes", default=None, help="trtexec-style maximum shapes")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="TensorRT 10 builder precision (auto: the ONNX's dtype). TensorRT 11 is strongly typed: "
                        "build from the float16 export instead")
    p.add_argument("--timing-cache", default=None, help="timing cache file (read if present, written after)")
    p.add_argument("--layer-info", default=None, help="write the engine inspector's layer information JSON here")
    p.add_argument("--workspace-gib", type=float, default=None, help="builder workspace limit in GiB")
    p.add_argument("--driver-cuda", default=None,
                   help="CUDA version of the oldest driver that will run the plan (caps the PTX ISA of the "
                        "baked kernels; default $MUSE_TRT_DRIVER_CUDA or 12.4)")
    p.add_argument("--allow-jit-plugins", action="store_true",
                   help="allow plugins without an AOT implementation (the plan then needs Python + muse_tvr)")
    p.add_argument("--report", default=None, help="write a JSON build report here")
    p.add_argument("--verbose", action="store_true", help="TensorRT verbose log")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..export.tensorrt_build import build_engine, parse_range, parse_shapes

    try:
        report = build_engine(
            args.onnx, args.plan, batch=parse_range(args.batch, "batch"), frames=parse_range(args.frames, "frames"),
            min_shapes=parse_shapes(args.min_shapes), opt_shapes=parse_shapes(args.opt_shapes),
            max_shapes=parse_shapes(args.max_shapes), precision=args.precision, timing_cache=args.timing_cache,
            layer_info=args.layer_info, workspace_gib=args.workspace_gib, driver_cuda=args.driver_cuda,
            allow_jit_plugins=args.allow_jit_plugins, verbose=args.verbose)
    except (ImportError, FileNotFoundError, ValueError) as e:
        print(f"build-engine: {e}", file=sys.stderr)
        return 2
    if args.report:
        from dataclasses import asdict

        with open(args.report, "w") as f:
            json.dump(asdict(report), f, indent=2, default=str)
    return 0
