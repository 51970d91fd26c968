"""Shared by the ONNX/ORT test files: one TINY model, its exports and the C++ build, made once per session."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "cpp" / "build"


@lru_cache(maxsize=None)
def tiny_model():
    from muse_tvr.engine.config import TINY
    from muse_tvr.engine.model import MuseModel

    torch.manual_seed(0)
    return MuseModel(TINY).eval()


@lru_cache(maxsize=None)
def export_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="muse-onnx-test-"))


@lru_cache(maxsize=None)
def exported(part: str, dtype: str = "float32", pyramid: str = "decomposed"):
    """{variant: ExportedFile} for one part/dtype of the TINY model (exported once per session)."""
    from muse_tvr.export.onnx_export import export_part

    out = export_dir() / pyramid
    files = export_part(tiny_model(), part, out, dtype, pyramid=pyramid, log=lambda *a: None)
    return {f.variant: f for f in files}


@lru_cache(maxsize=None)
def built_cpp() -> Path:
    """Build the op library and the example with the documented command (make -C cpp); return cpp/build."""
    if shutil.which("g++") is None or shutil.which("make") is None:
        raise RuntimeError("g++ and make are needed to build cpp/ (apt-get install build-essential)")
    r = subprocess.run(["make", "-C", str(ROOT / "cpp")], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"`make -C cpp` failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return BUILD
