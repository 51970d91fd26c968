"""The op library across ONNX Runtime releases: the oldest supported one (1.21) runs it and agrees with the
current one; an older one (1.20) gets a clear registration error instead of a crash. Each release is
installed once from PyPI into build/ort-releases/ (gitignored) and imported ahead of the venv's own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_helpers import built_cpp, exported

ROOT = Path(__file__).resolve().parents[1]
OLDEST_SUPPORTED = "1.21.1"
TOO_OLD = "1.20.1"

RUN = """
import sys, numpy as np, onnxruntime as ort
lib, model, out = sys.argv[1:4]
print("onnxruntime", ort.__version__, flush=True)
so = ort.SessionOptions()
so.register_custom_ops_library(lib)
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
frames = np.random.default_rng(0).standard_normal((1, 2, 3, 224, 224)).astype(np.float32)
np.save(out, sess.run(None, {"frames": frames, "mask": np.ones((1, 2), np.float32)})[0])
"""


def _release(version: str) -> Path:
    target = ROOT / "build" / "ort-releases" / version
    if not (target / "onnxruntime").is_dir():
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                            f"onnxruntime=={version}"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return target


def _run(version: str, tmp_path: Path) -> subprocess.CompletedProcess:
    target = _release(version)
    model = exported("video")["plugin-nofunc"].path
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", RUN, str(built_cpp() / "libmuse_ort_ops.so"), str(model),
                           str(tmp_path / f"{version}.npy")], capture_output=True, text=True, timeout=300,
                          env=env)


def test_oldest_supported_runtime_runs_the_op_library(tmp_path):
    r = _run(OLDEST_SUPPORTED, tmp_path)
    assert r.returncode == 0 and f"onnxruntime {OLDEST_SUPPORTED}" in r.stdout, r.stdout + r.stderr
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(built_cpp() / "libmuse_ort_ops.so"))
    sess = ort.InferenceSession(str(exported("video")["plugin-nofunc"].path), so,
                                providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(0).standard_normal((1, 2, 3, 224, 224)).astype(np.float32)
    now = sess.run(None, {"frames": frames, "mask": np.ones((1, 2), np.float32)})[0]
    np.testing.assert_allclose(np.load(tmp_path / f"{OLDEST_SUPPORTED}.npy"), now, atol=1e-5)


def test_too_old_runtime_gets_a_clear_error(tmp_path):
    r = _run(TOO_OLD, tmp_path)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])  # an exception, not a signal
    assert "needs ONNX Runtime >= 1.21" in r.stderr and f"this runtime is {TOO_OLD}" in r.stderr, r.stderr


def test_header_fetch_fails_closed_on_an_unverifiable_index(tmp_path):
    """With a keyring that cannot verify the archive, the script stops before unpacking anything."""
    wrong = Path("/usr/share/keyrings/debian-archive-bullseye-stable.gpg")
    if not wrong.exists():
        pytest.skip(f"{wrong} is not on this machine")
    dest = tmp_path / "hdr"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_ort_headers.sh"), str(dest)], capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "ORT_HEADERS_KEYRING": str(wrong)})
    assert r.returncode == 1 and "could not fetch a verified" in r.stderr, r.stderr
    assert not dest.exists()
