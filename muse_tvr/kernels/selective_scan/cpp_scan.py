"""The C++ bidirectional scan (bi_scan.h) as a PyTorch CPU op, compiled on first use into a user cache."""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from .reference import _check_shapes

_HERE = Path(__file__).resolve().parent
_SOURCES = (_HERE / "bi_scan_torch.cpp", _HERE / "bi_scan.h")
_NAME = "muse_bi_scan"
_module = None
_error: str | None = None


def _cflags() -> list[str]:
    # The widest x86-64 level this CPU runs rather than -march=native, as cpp/Makefile chooses; no
    # -ffast-math, so float addition order stays as written.
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    # at::parallel_for is inline: with torch's OpenMP backend it runs serially unless compiled with OpenMP.
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        flags.append("-fopenmp")
    if platform.machine() in ("x86_64", "AMD64"):
        cpu = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
        flags.append("-march=x86-64-v3" if {"avx2", "fma"} <= cpu else "-march=x86-64-v2")
    return flags


def _build_dir(cflags: list[str]) -> Path:
    base = os.environ.get("MUSE_TVR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "muse-tvr")
    h = hashlib.sha256()
    for src in _SOURCES:
        h.update(src.read_bytes())
    h.update(" ".join(cflags).encode())  # a cache shared by CPUs of different levels must not mix builds
    return Path(base) / "torch-ext" / f"{_NAME}-{torch.__version__}-{h.hexdigest()[:12]}"


def load_extension():
    """The compiled module, built once per source, torch version and flags, then loaded from the cache.
    Raises RuntimeError with a one-line reason when it cannot be built (remembered for the process)."""
    global _module, _error
    if _module is None and _error is None:
        try:
            # Importing cpp_extension logs a CUDA_HOME warning on CPU hosts; this build never uses CUDA.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils import cpp_extension
            # pip's ninja lands beside this interpreter, which is not on PATH when the venv is not active.
            bindir = os.path.dirname(sys.executable)
            if bindir not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
            cxx = os.environ.get("CXX", "c++")
            if not shutil.which(cxx):
                raise RuntimeError(f"no C++ compiler ({cxx} not on PATH)")
            if not cpp_extension.is_ninja_available():
                raise RuntimeError("ninja is not installed (pip install ninja)")
            cflags = _cflags()
            build = _build_dir(cflags)
            build.mkdir(parents=True, exist_ok=True)
            if not (build / f"{_NAME}.so").exists():
                print(f"muse-tvr: building the C++ scan (first use, ~30 s) into {build}", file=sys.stderr)
            _module = cpp_extension.load(name=_NAME, sources=[str(_SOURCES[0])], build_directory=str(build),
                                         extra_cflags=cflags, verbose=False,
                                         extra_ldflags=[f for f in cflags if f == "-fopenmp"])
        except Exception as e:  # noqa: BLE001 - every failure becomes the one-line reason
            # The compiler's first diagnostic says more than torch's first line, which echoes the command.
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            diag = next((ln for ln in lines if "error:" in ln), None)
            _error = "C++ scan unavailable: " + (f"build failed: {diag}" if diag else lines[0])
    if _module is None:
        raise RuntimeError(_error)
    return _module


def cpp_scan_unavailable() -> str | None:
    """None when the extension loads, else why not (one line); never raises."""
    try:
        load_extension()
    except RuntimeError as e:
        return str(e)
    return None


def bidirectional_scan_cpp(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b,
                           delta_bias_f, delta_bias_b) -> torch.Tensor:
    """`bidirectional_scan_ref` in C++, parallel over torch's intra-op threads: silu(z) * (y_f + y_b).

    Token-major CPU tensors in the original token order: u, delta, z (Bt, L, D); B, C (Bt, L, N);
    A (D, N); D, delta_bias (D,); N <= 64. Any float dtype and strides (views such as xz[..., D:]); they
    are copied to contiguous float32 and the state is float32. Returns (Bt, L, D) in u_f.dtype.
    """
    _check_shapes(u_f, delta_f, A_f, B_f, C_f)
    _check_shapes(u_b, delta_b, A_b, B_b, C_b)
    args = (u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b, delta_bias_f, delta_bias_b)
    d = u_f.shape[2]
    for name, t, want in (("u_b", u_b, u_f.shape), ("z", z, u_f.shape), ("A_b", A_b, A_f.shape),
                          ("D_f", D_f, (d,)), ("D_b", D_b, (d,)), ("delta_bias_f", delta_bias_f, (d,)),
                          ("delta_bias_b", delta_bias_b, (d,))):
        if t.shape != want:
            raise ValueError(f"{name} must have shape {tuple(want)}, got {tuple(t.shape)}")
    if not 1 <= A_f.shape[1] <= 64:
        raise ValueError(f"d_state N must be in [1, 64], got {A_f.shape[1]}")
    if any(t.device.type != "cpu" for t in args):
        raise ValueError("bidirectional_scan_cpp needs CPU tensors")
    out = load_extension().bi_scan(*(t.to(torch.float32).contiguous() for t in args))
    return out.to(u_f.dtype)
