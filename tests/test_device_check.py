"""Rehearsal of benchmarks/device_check.sh as the GPU machine runs it: from `git archive HEAD` (committed
files only), with a python that has torch/triton but not this package, and no CUDA. Every section must
run and write its file, and summary.json must carry the keys the GPU run reports."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("preflight", "conv", "scan", "pyramid", "head", "video")
KEYS = ("card", "date", "commit", "scan_vs_mamba_ssm", "scan_b1_vs_mamba_ssm", "scan_pct_of_bound",
        "conv_vs_causal_conv1d",
        "pyramid_vs_eager", "head_vs_transformer_L3060", "head_vs_transformer_L12360", "video_encode_vs_eager")


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_device_check_rehearsal_from_archive(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the rehearsal is the no-CUDA path")
    tree = tmp_path / "tree"
    tree.mkdir()
    archive = tmp_path / "head.tar"
    subprocess.run(["git", "archive", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
    with tarfile.open(archive) as t:
        t.extractall(tree, filter="data")
    if not (tree / "benchmarks" / "device_check.sh").exists():
        pytest.skip("benchmarks/device_check.sh is not committed yet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "PYTHON"))}
    # -S: no site-packages, so no editable install of muse_tvr; torch/triton come from PYTHONPATH only.
    env.update(PYTHON=f"{sys.executable} -S", PYTHONPATH=sysconfig.get_paths()["purelib"],
               OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", "benchmarks/device_check.sh"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=600)
    out = tmp_path / "out"
    log = (out / "device_check.log").read_text() if (out / "device_check.log").exists() else proc.stdout
    assert proc.returncode == 0, log[-4000:]
    for name in SECTIONS:
        data = json.loads((out / f"{name}.json").read_text())
        assert data["section"] == name and not data["failed"], (name, data.get("log"))
    summary = json.loads((out / "summary.json").read_text())
    assert set(KEYS) <= set(summary), set(KEYS) - set(summary)
    assert summary["all_sections_ok"] and summary["commit"] != "unknown"
    # No CUDA extension in a rehearsal: the comparison is null, with the reason beside it.
    assert summary["scan_vs_mamba_ssm"] is None and "CUDA" in summary["scan_vs_mamba_ssm_reason"]
    assert len(list(out.iterdir())) <= 8, "the device machine returns at most 8 files from $OUT"


def test_interpreter_support_refusal(monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check_mod", ROOT / "benchmarks" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    import numpy
    import triton
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.5.0")
    msg = gc.interpreter_problem()
    assert msg and "triton >= 3.8" in msg and "\n" not in msg
    monkeypatch.setattr(numpy, "__version__", "2.3.5")
    assert gc.interpreter_problem() is None
    monkeypatch.setattr(triton, "__version__", "3.8.0")
    monkeypatch.setattr(numpy, "__version__", "2.5.0")
    assert gc.interpreter_problem() is None
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    assert gc.interpreter_problem() is None
    assert gc.device_peaks("NVIDIA H200")["hbm_bytes_per_s"] == 4.8e12
    assert gc.device_peaks("NVIDIA H100 80GB HBM3")["hbm_bytes_per_s"] == 3.35e12
