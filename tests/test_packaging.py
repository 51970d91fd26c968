"""The repository carries its license and the package metadata names it; the wheel ships what the
installed package needs (the benchmark harness as muse_tvr.bench, the C++ scan sources) and
`muse-tvr bench` works from an installed copy, outside the checkout."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Files the installed package reads at run time and that setup.py must map or list explicitly.
WHEEL_MUST_HOLD = (
    "muse_tvr/bench/__init__.py",
    "muse_tvr/bench/run.py",
    "muse_tvr/bench/registry.py",
    "muse_tvr/bench/visualize.py",
    "muse_tvr/kernels/selective_scan/bi_scan.h",
    "muse_tvr/kernels/selective_scan/bi_scan_torch.cpp",
)


def test_license_and_metadata(tmp_path):
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "muse-tvr authors" in text
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "-e", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    info = next(tmp_path.glob("*/PKG-INFO")).read_text()
    assert "License: MIT" in info or "License-Expression: MIT" in info
    assert "Author: muse-tvr authors" in info
    assert "Description-Content-Type: text/markdown" in info and "# muse-tvr" in info
    assert "License-File: LICENSE" in info


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built once from this checkout (no build isolation, no network): every intermediate
    folder under a temporary directory, so the checkout's build/ and egg-info are untouched."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "-e", str(tmp),
                    "build", "--build-base", str(tmp / "build"),
                    "bdist_wheel", "--bdist-dir", str(tmp / "bdist"), "-d", str(tmp / "dist")],
                   cwd=ROOT, check=True, capture_output=True)
    (whl,) = (tmp / "dist").glob("muse_tvr-*.whl")
    return whl


def test_wheel_ships_bench_harness_and_cpp_scan_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in WHEEL_MUST_HOLD if n not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    assert not any(n.startswith("benchmarks/") for n in names), "the harness ships only as muse_tvr.bench"


def test_shipped_harness_imports_only_muse_tvr_names(wheel):
    """`muse-tvr bench` runs the shipped copy, where no top-level `benchmarks` package exists."""
    with zipfile.ZipFile(wheel) as z:
        bad = [(n, line.strip()) for n in z.namelist()
               if n.startswith("muse_tvr/bench/") and n.endswith(".py")
               for line in z.read(n).decode().splitlines()
               if line.lstrip().startswith(("from benchmarks", "import benchmarks"))]
    assert not bad, bad


def test_installed_wheel_runs_bench_outside_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    # The installed copy comes first on sys.path (ahead of the dev venv's editable install).
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = tmp_path / "run"
    run.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", "import muse_tvr, muse_tvr.bench.run as r; print(muse_tvr.__file__); "
                               "print(r.__file__)"],
        cwd=run, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert all(Path(p).is_relative_to(site) for p in probe.stdout.split()), probe.stdout
    cli = site / "bin" / "muse-tvr"
    done = subprocess.run([str(cli), "bench", "--help"], cwd=run, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--full" in done.stdout and "muse-tvr-bench" in done.stdout
