"""pytest-benchmark micro-benchmarks on toy shapes: scan, conv, pyramid, one block, the head, CLIP.

In CI (pyproject sets --benchmark-disable) each runs once as a smoke test. To time them:
    .venv/bin/pytest tests/test_bench_micro.py --benchmark-enable
Each benchmark also checks its result, so a broken path fails even when timing is disabled.
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import registry  # noqa: E402
from muse_tvr.engine.config import TINY  # noqa: E402

CPU = torch.device("cpu")
POINT = registry.Point(TINY, batch=1, frames=2)  # L = 510, d = 64

CASES = [("scan", "reference"), ("scan", "cpu-chunked"), ("conv", "reference"), ("block", "reference"),
         ("block", "cpu-chunked"), ("head", "reference"), ("head", "cpu-chunked"), ("head", "transformer-depth"),
         ("pyramid", "reference"), ("clip", "reference")]


@pytest.mark.parametrize("target,backend", CASES, ids=[f"{t}-{b}" for t, b in CASES])
def test_micro(benchmark, target, backend):
    prep = registry.build(target, backend, POINT, CPU)
    with torch.no_grad():
        out = benchmark(prep.fn)
    first = out[0] if isinstance(out, (tuple, list)) else out
    assert torch.isfinite(first).all()
    if target in ("head", "block"):
        assert first.shape == (1, POINT.seq_len, TINY.head.d_model)
