"""Run a model repository on the tritonserver that nvidia-pytriton bundles (2.51, CPU; it ships only the
Python backend), e.g. the Python-backend models of `muse-tvr export triton-repo`:

    proc = start_bundled_tritonserver(repo, workdir, http_port=..., grpc_port=..., metrics_port=...)

The Python backend needs its stub beside it (PyTriton keeps one per Python version) and the stub needs
the environment that stub_env prepares; this lays out a backend directory the way PyTriton does at start.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def start_bundled_tritonserver(repo: str | os.PathLike, workdir: str | os.PathLike, http_port: int, grpc_port: int,
                               metrics_port: int, log=None) -> subprocess.Popen:
    """tritonserver --model-repository `repo` as a child process (stdout/stderr into `log`, a file)."""
    from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path

    from .stub_env import ensure_stub_env, server_env

    root = Path(get_root_module_path()) / "tritonserver"
    backends = Path(workdir) / "backends"
    if not backends.exists():
        shutil.copytree(root / "backends", backends)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(get_stub_path(version), backends / "python" / "triton_python_backend_stub")
    stub = ensure_stub_env()
    env = dict(os.environ)
    env.update(server_env())
    env["LD_LIBRARY_PATH"] += ":" + str(get_libs_path())
    env["PATH"] = f"{stub / 'bin'}:{env.get('PATH', '')}"  # the Python backend runs the stub with this python
    cmd = [str(root / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends}",
           f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
           "--exit-timeout-secs=5"]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
