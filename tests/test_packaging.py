"""The repository carries its license and the package metadata names it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
