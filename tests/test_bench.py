"""The benchmark harness on toy shapes: statistics, skip reasons, FLOP counts, JSON/markdown/PNG output."""
import json
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is a source-tree package beside muse_tvr/, not installed: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import registry, run
from benchmarks.visualize import plot_latency  # noqa: E402
from muse_tvr.engine.config import TINY, VIT_B_32
from muse_tvr.engine.transformer_head import depth_matched, parameter_matched

CPU = torch.device("cpu")


def test_summarize_median_and_iqr():
    s = run.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s["median_s"] == 3.0 and s["q1_s"] == 2.0 and s["q3_s"] == 4.0 and s["iqr_s"] == 2.0
    assert (s["min_s"], s["max_s"], s["n"]) == (1.0, 5.0, 5)
    s = run.summarize([2.0, 4.0])
    assert s["median_s"] == 3.0 and s["q1_s"] == 2.5 and s["q3_s"] == 3.5
    assert run.summarize([7.0])["iqr_s"] == 0.0
    with pytest.raises(ValueError):
        run.summarize([])


def test_time_fn_counts_calls_and_budget():
    calls = []
    times = run.time_fn(lambda: calls.append(1), CPU, warmup=2, repeats=4)
    assert len(times) == 4 and len(calls) == 6 and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="CUDA graphs"):
        run.time_fn(lambda: None, CPU, cuda_graph=True)


def test_skip_reasons_on_cpu():
    assert "CUDA" in registry.skip_reason("scan", "triton", CPU)
    assert "CUDA" in registry.skip_reason("scan", "mamba-ssm", CPU) or "cuda" in registry.skip_reason("scan", "mamba-ssm", CPU)
    assert registry.skip_reason("head", "reference", CPU) is None
    assert registry.skip_reason("head", "transformer-depth", CPU) is None
    assert registry.skip_reason("scan", "transformer-depth", CPU)
    assert registry.skip_reason("nothing", "reference", CPU).startswith("unknown target")


def test_flop_counts_match_the_spec():
    # docs/model.md section 8: ~14.0 GMAC for the head at L = 3060 as written; out_proj folded into
    # temporal_fc saves one d x d map per token and block: 3060 x 4 x 512^2 = 3.2 GMAC.
    gmac = registry.mamba_head_flops(VIT_B_32, 3060) / 2e9
    assert abs(gmac - (14.04 - 3060 * 4 * 512 * 512 / 1e9)) < 0.05
    t = depth_matched()
    linear = registry.transformer_head_flops(t, 1) - 4 * 4 * 512  # L = 1: attention is 4 L^2 d per layer
    assert linear == 2 * (12 * 512 * 512) * 4  # 12 d^2 MACs per token per layer, 2 FLOP each


def test_plan_tiny_writes_json_markdown_png(tmp_path):
    plan = run.Plan("unit", warmup=1, repeats=2, budget_s=2.0, min_repeats=2)
    pt = registry.Point(TINY, 1, 1)
    for backend in ("reference", "cpu-chunked", "triton", "transformer-depth", "transformer-param"):
        plan.cases.append(("head", backend, pt))
    plan.cases.append(("head", "reference", registry.Point(TINY, 1, 2)))
    plan.cases.append(("head", "transformer-depth", registry.Point(TINY, 1, 2)))
    result = run.run_plan(plan, CPU, progress=False, with_gemm=False)
    by = {(r["backend"], r["seq_len"]): r for r in result["records"]}
    ok = by[("reference", TINY.sequence_length(1))]
    assert ok["status"] == "ok" and ok["n"] == 2 and ok["params"] > 0
    assert ok["median_s"] == run.summarize(ok["times_s"])["median_s"]
    assert by[("triton", TINY.sequence_length(1))]["status"] == "skipped"
    assert any(s["backend"] == "cpu-chunked" and "vs_reference" in s for s in result["speedups"])
    assert result["machine"]["cores"] >= 1 and result["machine"]["date"]
    paths = run.write_results(result, tmp_path, "unit")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["records"][0]["target"] == "head"
    md = paths["md"].read_text()
    assert "| head | reference | tiny |" in md and "Not measured" in md
    png = plot_latency(result, tmp_path / "unit.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_shows_targets_measured_at_one_length():
    """A target measured at a single length (the quick run's learner, the only place the ONNX Runtime
    route appears) gets a bar panel instead of an empty line plot."""
    from benchmarks.visualize import plan_panels

    rec = lambda t, b, n: {"status": "ok", "target": t, "backend": b, "batch": 1, "seq_len": n,  # noqa: E731
                           "median_s": 0.1, "q1_s": 0.09, "q3_s": 0.11, "model": "m"}
    result = {"records": [rec("head", "reference", 100), rec("head", "reference", 200),
                          rec("learner", "ort-oplib", 3060), rec("learner", "reference", 3060)]}
    assert plan_panels(result) == [("head", "lines"), ("learner", "bars")]
    assert plan_panels({"records": [rec("learner", "ort-oplib", 3060)]}) == [("learner", "bars")]


def test_parameter_counts_reported_by_registry():
    pt = registry.Point(TINY, 1, 1)
    depth = registry.build("head", "transformer-depth", pt, CPU)
    param = registry.build("head", "transformer-param", pt, CPU)
    muse = registry.build("head", "reference", pt, CPU)
    assert depth.params == depth_matched(64, 2).parameter_count()
    assert param.params == parameter_matched(muse.params, 64).parameter_count()
    with pytest.raises(ValueError, match="cannot run"):
        registry.build("scan", "triton", pt, CPU)


def test_bench_cli_parses():
    from muse_tvr.cli import build_parser
    args = build_parser().parse_args(["bench", "--full", "--device", "cpu", "--no-plot"])
    assert args.full and args.device == "cpu" and args.func.__module__ == "muse_tvr.commands.bench"


def test_learner_routes_agree_with_reference():
    pt = registry.Point(TINY, 1, 2)
    ref = registry.build("learner", "reference", pt, CPU).fn()
    fast = registry.build("learner", "cpu-chunked", pt, CPU).fn()
    assert ref.shape == (1, TINY.embed_dim)
    assert (fast - ref).abs().max() < 1e-5
    reason = registry.skip_reason("learner", "ort", CPU)
    assert reason is None or "op library" in reason or "onnxruntime" in reason
    assert registry.skip_reason("head", "ort", CPU)  # ORT runs the exported tokens -> embedding model


def test_sdpa_choice_is_recorded():
    plan = run.Plan("unit", warmup=1, repeats=1, budget_s=1.0, min_repeats=1)
    plan.cases.append(("head", "transformer-param", registry.Point(TINY, 1, 1)))
    result = run.run_plan(plan, CPU, progress=False, with_gemm=False, sdpa="math")
    assert result["sdpa_backend"] == "math" and result["records"][0]["status"] == "ok"
    result = run.run_plan(plan, CPU, progress=False, with_gemm=False, sdpa="cudnn")
    assert result["sdpa_backend"].startswith("none") and result["records"][0]["status"] == "error"


def test_sdpa_backend_is_logged():
    from benchmarks.sdpa import detect_sdpa_backend
    assert detect_sdpa_backend(backend="math") == "math"
    auto = detect_sdpa_backend()
    assert auto in ("flash (CPU)", "math"), auto
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        detect_sdpa_backend(backend="fastest")
