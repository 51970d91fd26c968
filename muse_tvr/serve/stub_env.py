"""The Python environment for PyTriton's Python-backend stub, and the environment variables it needs.

Two facts about nvidia-pytriton 0.7.0 (tritonserver 2.51) make `muse-tvr serve` set these up itself:

1. The stub (`triton_python_backend_stub`) is linked against libpython3.X.so and the dynamic loader finds
   the system's copy first. With pyenv's 3.11.7 beside Debian's 3.11.2 the stub ran 3.11.7's standard
   library on 3.11.2's interpreter and failed in `threading` (`'_thread.RLock' object has no attribute
   '_recursion_count'`). `server_env` puts the running interpreter's LIBDIR first on LD_LIBRARY_PATH.
2. The stub's pybind11 was built against numpy 1.x. Under numpy 2 it misreads the array descriptor
   (the struct layout changed), so every BYTES input reached the model as the first byte repeated
   (`unpack_from requires a buffer of at least 50529031 bytes`, 50529031 = 0x03030303 + 4 for "abc").
   PyTriton runs the stub in the environment `get_triton_python_backend_python_env()` returns (the
   running interpreter's prefix). When this interpreter has numpy >= 2 we give the stub a small venv of
   the same interpreter holding numpy 1.26 and a .pth file that appends this environment's
   site-packages (pytriton, pyzmq, ... are pure or numpy-independent), so only the stub sees numpy 1.
   The stub and the model process exchange raw tensor bytes through shared memory, so the two numpy
   versions never share objects.

`python -m muse_tvr.serve.stub_env` prepares the venv ahead (the Makefile's dev set-up runs it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

STUB_NUMPY = "numpy==1.26.4"  # the last numpy 1.x release, wheels for CPython 3.9-3.12


def stub_env_dir() -> Path:
    """Where the stub's venv lives: inside this environment, so `make clean` removes it with .venv."""
    return Path(os.environ.get("MUSE_TRITON_STUB_ENV") or Path(sys.prefix) / "triton-stub")


def needs_stub_env() -> bool:
    import numpy as np

    return int(np.__version__.split(".")[0]) >= 2


def _stub_ready(env: Path) -> bool:
    py = env / "bin" / "python"
    if not py.exists():
        return False
    probe = subprocess.run([str(py), "-c", "import numpy, zmq, pytriton, muse_tvr; print(numpy.__version__)"],
                           capture_output=True, text=True, cwd="/")  # not this checkout: the installed muse_tvr
    return probe.returncode == 0 and probe.stdout.strip().startswith("1.")


def ensure_stub_env(log=None) -> Path:
    """The environment the stub should run in: this one when its numpy is 1.x, else the stub venv,
    created on first use (python -m venv + pip install numpy 1.26; ~10 s, needs the package index)."""
    if not needs_stub_env():
        return Path(sys.exec_prefix)
    env = stub_env_dir()
    if _stub_ready(env):
        return env
    log = log or (lambda msg: print(msg, file=sys.stderr))
    log(f"preparing the Triton Python-backend stub environment in {env} (numpy 1.x; once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", STUB_NUMPY],
                   check=True)
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # An `import` line in a .pth runs at start-up: the parent's site-packages join sys.path after the
    # venv's own (the stub's numpy 1.26 wins), and addsitedir runs their .pth files too (an editable
    # muse-tvr install is one), so the stub can import everything else from this environment.
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "muse-tvr-parent-env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    if not _stub_ready(env):
        raise RuntimeError(f"{env}: the stub environment does not import numpy 1.x, zmq, pytriton and muse_tvr; "
                           f"remove it and retry")
    return env


def server_env() -> dict[str, str]:
    """Environment entries tritonserver (and so the stub) must start with; see the module docstring."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    parts = [libdir] + [p for p in current.split(":") if p and p != libdir]
    return {"LD_LIBRARY_PATH": ":".join(parts)}


if __name__ == "__main__":
    print(ensure_stub_env())
