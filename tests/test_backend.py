"""The triton backend (interpreter on CPU) against the reference path: one block, the whole TINY head,
the model's encode_tokens; backend selection, weight folding, rebuild on weight change, embedding cache."""
import pytest
import torch

from helpers import assert_close
from muse_tvr.engine.backend import (EmbeddingCache, FastBlock, VideoEncoder, fast_head, resolve_backend,
                                     run_head, video_key)
from muse_tvr.engine.config import TINY
from muse_tvr.engine.mamba import MuseBlock, MuseHead
from muse_tvr.engine.model import MuseModel


def randomize(module):
    """Move the SSM parameters off their tidy initial values so every term matters."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "A_log" in name or "A_b_log" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith(".D") or name.endswith("D_b"):
                p.copy_(torch.randn_like(p))
    return module


def test_resolve_backend():
    assert resolve_backend("auto", "cpu") == "reference"
    assert resolve_backend(None, "cpu") == "reference"
    assert resolve_backend("reference", "cpu") == "reference"
    assert resolve_backend("triton", "cpu") == "triton"  # tests run under TRITON_INTERPRET=1
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", "cpu")


def test_folded_output_map_is_out_proj_then_temporal_fc():
    block = MuseBlock(TINY.head)
    fb = FastBlock.from_module(block)
    y = torch.randn(5, TINY.head.d_inner)
    expected = block.temporal_fc(block.mamba.out_proj(y))
    assert_close(torch.nn.functional.linear(y, fb.w_out, fb.b_out), expected, 1e-5, 1e-5, "folded map")
    assert_close(fb.A_f, -torch.exp(block.mamba.A_log), 0, 0, "precomputed A")


@pytest.mark.parametrize("b,length", [(2, 13), (1, 1)], ids=["B2-L13", "B1-L1"])
def test_block_matches_reference(b, length):
    block = randomize(MuseBlock(TINY.head))
    x = torch.randn(b, length, TINY.head.d_model)
    with torch.no_grad():
        assert_close(FastBlock.from_module(block)(x), block(x), 5e-5, 1e-4, "MUSE block, triton vs reference")


def test_head_matches_reference_bf16():
    head = randomize(MuseHead(TINY.head)).to(torch.bfloat16)
    x = torch.randn(1, 9, TINY.head.d_model).to(torch.bfloat16)
    with torch.no_grad():
        got, want = run_head(head, x, "triton").float(), head(x).float()
    # Two blocks of bf16 GEMMs, LayerNorm and scan (the folded output map rounds once instead of twice):
    # measured max error is one bf16 ulp of outputs up to |3.3| (0.0156); allow about that.
    assert_close(got, want, 0.02, 2.0 ** -7, "bf16 head, triton vs reference")


def test_model_head_end_to_end_matches_reference():
    """encode_tokens on one frame of TINY (L = 1 + 9 + 49 + 196 = 255 tokens) through both backends
    (the triton side also runs the fused pyramid kernel when muse_tvr.kernels.pyramid provides it)."""
    model = MuseModel(TINY).eval()
    randomize(model.head)
    tokens = torch.randn(1, 1, 50, TINY.embed_dim)
    model.backend = "reference"
    want = model.encode_tokens(tokens)
    with torch.no_grad():
        seq_ref = model.head(model.build_sequence(tokens))
    model.backend = "triton"
    got = model.encode_tokens(tokens)
    with torch.no_grad():
        seq_fast = run_head(model.head, model.build_sequence(tokens), "triton")
    assert_close(seq_fast, seq_ref, 2e-4, 2e-4, "whole head sequence output")
    assert_close(got, want, 1e-5, 1e-4, "video embedding")


def test_fast_head_rebuilds_when_weights_change():
    head = MuseHead(TINY.head)
    first = fast_head(head)
    assert fast_head(head) is first
    with torch.no_grad():
        head.MS_mamba[0].temporal_fc.bias.add_(1.0)
    second = fast_head(head)
    assert second is not first
    assert_close(second.blocks[0].b_out, head.MS_mamba[0].temporal_fc.bias.detach(), 0, 0, "rebuilt bias")


def test_embedding_cache_lru_and_invalidation():
    cache = EmbeddingCache(max_items=2)
    cache.check_model(("v1",))
    for k in "abc":
        cache.put(k, torch.full((3,), float(ord(k))))
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c")[0] == ord("c")
    cache.check_model(("v2",))
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_items"):
        EmbeddingCache(0)


def test_video_encoder_caches_per_video(tmp_path):
    model = MuseModel(TINY).eval()
    # The cache logic does not depend on the head; an empty head (identity) keeps the test fast.
    model.head.forward = lambda seq: seq
    enc = VideoEncoder(model)
    frames = torch.randn(2, 1, 3, 224, 224)
    mask = torch.ones(2, 1)
    want = model.encode_video(frames, mask)
    got = enc.encode(frames, mask, keys=["v0", "v1"])
    assert_close(got, want, 1e-6, 1e-6, "first pass")
    assert enc.cache.misses == 2 and enc.cache.hits == 0
    # A cached video is not recomputed: a new batch with one known and one new video computes one.
    again = enc.encode(frames.flip(0), mask, keys=["v1", "v2"])
    assert enc.cache.hits == 1 and enc.cache.misses == 3
    assert_close(again[0], want[1], 0, 0, "cache hit")
    assert_close(again[1], want[0], 1e-6, 1e-6, "new video")
    with pytest.raises(ValueError, match="keys"):
        enc.encode(frames, mask, keys=["only-one"])
    p = tmp_path / "clip.mp4"
    p.write_bytes(b"x")
    assert video_key(p).startswith(str(p.resolve()))


# ----- benchmarks/gpu_check.py: the parts that need no GPU ---------------------------------------------
def _gpu_check():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_bound_arithmetic():
    gc = _gpu_check()
    b = gc.scan_bound(16, 3060, 512, 16, "bf16")
    # docs/benchmarks.md, "GPU: the scan's bound": exp-bound at MUSE's shape; all 8 direction-layers (4 blocks) ~0.77 ms.
    assert b["limit"] == "exp"
    assert abs(4 * b["exp_s"] * 1e3 - 0.77) < 0.01
    elems = 16 * 3060 * 512
    assert b["bytes"] == 2 * (6 * elems + 4 * 16 * 3060 * 16)
    pct = gc.percent_of_bound(2 * b["bound_s"] * 1e3, b)
    assert abs(pct["bound"] - 50.0) < 1e-9 and pct["hbm"] < pct["exp"]
    assert gc.conv_bound(1, 10, 4, "fp32")["bytes"] == 4 * 3 * 40
    assert gc.card_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    import datetime
    js, txt = gc.result_paths("out", "NVIDIA H100", datetime.datetime(2026, 1, 2, 3, 4))
    assert js.name == "gpu_check-nvidia-h100-20260102-0304.json" and txt.suffix == ".txt"


def test_gpu_check_arguments():
    gc = _gpu_check()
    a = gc.parse_args([])
    assert (a.batch, a.length, a.dim, a.state, a.dtype) == (16, 3060, 512, 16, "bf16")
    q = gc.parse_args(["--quick"])
    assert q.length <= 1024 and q.batch <= 4
    with pytest.raises(SystemExit):
        gc.parse_args(["--batch", "0"])


def test_gpu_check_without_cuda_skips(capsys):
    gc = _gpu_check()
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this test covers the no-CUDA message")
    assert gc.main(["--no-save"]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_check_smoke_on_interpreter(tmp_path):
    """Every section's code path, at tiny shapes on the CPU interpreter (timings meaningless)."""
    import json
    gc = _gpu_check()
    assert gc.main(["--device", "cpu", "--smoke", "--dtype", "fp32", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("gpu_check-cpu-interpreter-*.json")
    data = json.loads(js.read_text())
    assert data["checks"] and all(c["ok"] for c in data["checks"]) and not data["failed"]
    assert any(t["name"].startswith("triton auto") for t in data["timings"])
