"""`muse-tvr compare`: PyTorch (the reference backend) vs ONNX Runtime (op library) vs ONNX Runtime (portable) on the same inputs.

Exports the model to a directory (or reuses the files there, found through their JSON sidecars), runs
every part and dtype on random inputs with a batch and frame count different from the export's, and
prints the max absolute and relative error of each output against PyTorch. Fails (exit 2) when any
error exceeds the tolerance: float32 atol 1e-4, float16 atol 1e-2 (embeddings are unit vectors).
"""
from __future__ import annotations

import argparse

TOLERANCE = {"float32": 1e-4, "float16": 1e-2}  # per export dtype (onnx_export.DTYPES)


class ToleranceError(ValueError):
    """An exported model disagrees with PyTorch beyond tolerance."""


def register(sub: argparse._SubParsersAction) -> None:
    from ..export.onnx_export import DTYPES, PARTS
    from . import add_model_args

    p = sub.add_parser("compare", help="PyTorch vs ORT (op library) vs ORT (portable): max abs/rel error")
    add_model_args(p, default_backbone="tiny", backend=False)  # the seed and backbone of the export
    p.add_argument("--dir", required=True, help="directory of an export of THIS model; exported there first "
                   "if it holds no .onnx files")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES))
    p.add_argument("--op-library", default=None, help="path of libmuse_ort_ops.so (default cpp/build)")
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--frames", type=int, default=2)
    p.set_defaults(func=run)


def compare_files(model, files, op_library=None, batch: int = 3, frames: int = 2, log=print) -> list[dict]:
    """Compare each (part, dtype) group of exported files with PyTorch; raise ToleranceError on failure."""
    import numpy as np
    import torch

    from ..export.onnx_export import DTYPES, cast_model, example_inputs
    from ..export.ort_runner import OrtModel

    groups: dict[tuple[str, str], dict[str, object]] = {}
    for f in files:
        groups.setdefault((f.part, f.dtype), {})[f.variant] = f.path
    rows, failures = [], []
    for (part, dtype), by_variant in sorted(groups.items()):
        m = cast_model(model, DTYPES[dtype]).set_backend("reference")  # the plain PyTorch oracle
        inputs = example_inputs(m.config, part, DTYPES[dtype], batch=batch, frames=frames, seed=1)
        with torch.no_grad():
            if part == "video":
                ref = m.encode_video(inputs["frames"], inputs["mask"])
            elif part == "head":
                ref = m.encode_tokens(inputs["tokens"], inputs["mask"])
            else:
                ref = m.encode_text(inputs["ids"])
        ref = ref.float().numpy()
        routes = []
        if "plain" in by_variant:
            routes = [("ort", by_variant["plain"], "portable")]
        else:
            lib_file = by_variant.get("plugin-nofunc") or by_variant.get("plugin") or by_variant.get("portable")
            routes.append(("ort+oplib", lib_file, "oplib"))
            fn_file = by_variant.get("portable") or by_variant.get("plugin")
            if fn_file is not None:
                routes.append(("ort-portable", fn_file, "portable"))
        for label, path, route in routes:
            out = OrtModel(path, route, op_library).run(inputs)["embedding"].astype(np.float32)
            err = np.abs(out - ref)
            rel = float((err / np.maximum(np.abs(ref), 1e-6)).max())
            row = {"part": part, "dtype": dtype, "runtime": label, "file": str(path), "output": "embedding",
                   "max_abs": float(err.max()), "max_rel": rel, "tolerance": TOLERANCE[dtype]}
            ok = row["max_abs"] <= TOLERANCE[dtype]
            log(f"{part:<6}{dtype:<9}{label:<14}max abs {row['max_abs']:.3e}  max rel {rel:.3e}  "
                f"{'ok' if ok else 'FAIL'}  ({path})")
            rows.append(row)
            if not ok:
                failures.append(row)
    if failures:
        raise ToleranceError("exported models disagree with PyTorch beyond tolerance: " + "; ".join(
            f"{r['part']} {r['dtype']} {r['runtime']} max abs {r['max_abs']:.3e} > {r['tolerance']}"
            for r in failures))
    return rows


def _files_in(directory):
    import json
    from pathlib import Path

    from ..export.onnx_export import ExportedFile

    out = []
    for side in sorted(Path(directory).glob("*.json")):
        meta = json.loads(side.read_text())
        if "part" in meta and (side.parent / meta["file"]).is_file():
            out.append(ExportedFile(meta["part"], meta["variant"], meta["dtype"], side.parent / meta["file"], side))
    return out


def check_fingerprints(files, fingerprint: str, directory) -> None:
    """Refuse exported files whose sidecar records a different model (or none)."""
    import json

    for f in files:
        recorded = json.loads(f.sidecar.read_text()).get("model_fingerprint")
        if recorded != fingerprint:
            what = "records no model fingerprint" if recorded is None else "was exported from another model"
            raise ValueError(f"{f.sidecar} {what}: pass the --model/--sidecar/--backbone/--seed used for the "
                             f"export, or an empty --dir to export this model there "
                             f"(this model: {fingerprint[:16]})")


def run(args: argparse.Namespace) -> int:
    from . import build_model, model_spec
    from .export import require_export_extra

    require_export_extra("compare")
    from ..export.onnx_export import export_all

    model, info = build_model(model_spec(args))
    files = [f for f in _files_in(args.dir) if f.part in args.parts and f.dtype in args.dtype]
    if files:
        check_fingerprints(files, info["fingerprint"], args.dir)
    else:
        files = export_all(model, args.dir, args.parts, args.dtype, fingerprint=info["fingerprint"])
    compare_files(model, files, args.op_library, args.batch, args.frames)
    return 0
