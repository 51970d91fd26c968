"""scripts/build_gpu_baselines.sh (make gpu-baselines) is slow and downloads ~5 GB, so the suite only
checks that its --help and --dry-run modes work and create nothing."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_gpu_baselines.sh"


def _run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_help():
    p = _run("--help")
    assert p.returncode == 0, p.stderr
    assert "--dry-run" in p.stdout and "build/gpu-baselines" in p.stdout


def test_dry_run_creates_nothing(tmp_path):
    before = {p.name for p in (ROOT / "build").iterdir()} if (ROOT / "build").exists() else set()
    p = _run("--dry-run")
    assert p.returncode == 0, p.stderr
    for want in ("torch==2.11.0", "nvidia-cuda-nvcc==13.0.*", "mamba-ssm==2.3.2.post1", "causal-conv1d==1.7.0",
                 "compute_90,code=sm_90", "selective_scan_fwd_", "causal_conv1d_fwd.cu", "cuobjdump"):
        assert want in p.stdout, want
    after = {p.name for p in (ROOT / "build").iterdir()} if (ROOT / "build").exists() else set()
    assert after == before


def test_unknown_argument_fails():
    assert _run("--bogus").returncode == 2


def test_make_target_exists():
    mk = (ROOT / "Makefile").read_text()
    assert "gpu-baselines:" in mk and "scripts/build_gpu_baselines.sh" in mk
