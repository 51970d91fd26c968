"""Backends and ops: every registered implementation of every op against its reference (Triton under the
interpreter), the derived weights, backend selection, and the one list of backend names."""
import inspect

import pytest
import torch

from helpers import assert_close
from muse_tvr.engine import backend as backends
from muse_tvr.engine.config import TINY, HeadConfig, VisionConfig
from muse_tvr.engine.mamba import MuseBlock, MuseHead
from muse_tvr.engine.pyramid import FeaturePyramid
from muse_tvr.kernels import causal_conv, pyramid, selective_scan


def randomize(module):
    """Move the SSM parameters off their tidy initial values so every term matters."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "A_log" in name or "A_b_log" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith(".D") or name.endswith("D_b"):
                p.copy_(torch.randn_like(p))
    return module


def required(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]


@pytest.mark.parametrize("table,ref", [(causal_conv.IMPLEMENTATIONS, causal_conv.bidirectional_causal_conv_ref),
                                       (selective_scan.IMPLEMENTATIONS, selective_scan.bidirectional_scan_ref),
                                       (pyramid.IMPLEMENTATIONS, pyramid.pyramid_sequence_ref)],
                         ids=["conv", "scan", "pyramid"])
def test_every_implementation_has_the_reference_signature(table, ref):
    for name, fn in table.items():
        params = list(inspect.signature(fn).parameters)
        assert params[:len(inspect.signature(ref).parameters)] == list(inspect.signature(ref).parameters), name
        assert required(fn) == required(ref), name


@pytest.mark.parametrize("impl", sorted(causal_conv.IMPLEMENTATIONS))
@pytest.mark.parametrize("b,length,d,dtype", [(1, 1, 7, torch.float32), (2, 37, 24, torch.float32),
                                              (1, 13, 16, torch.bfloat16)])
def test_conv_implementations_match_reference(impl, b, length, d, dtype):
    x = torch.randn(b, length, 2 * d).to(dtype)[..., :d]  # a row-strided view, as in_proj's output gives
    w_f, w_b = torch.randn(d, 4), torch.randn(d, 4)
    b_f, b_b = torch.randn(d), torch.randn(d)
    got = causal_conv.IMPLEMENTATIONS[impl](x, w_f, b_f, w_b, b_b)
    want = causal_conv.bidirectional_causal_conv_ref(x, w_f, b_f, w_b, b_b)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for g, w, tag in zip(got, want, ("forward", "backward")):
        assert g.dtype == dtype
        assert_close(g.float(), w.float(), tol, tol, f"{impl} conv {tag}")


def scan_kwargs(b, length, d, n, dtype):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(dtype)  # noqa: E731
    kw = {}
    for tag in ("f", "b"):
        xd = r(b, length, 2 * n + 3)  # B and C as column slices of one projection output
        kw.update({f"u_{tag}": r(b, length, d), f"delta_{tag}": r(b, length, d, scale=0.5),
                   f"B_{tag}": xd[..., 3:3 + n], f"C_{tag}": xd[..., 3 + n:],
                   f"A_{tag}": -torch.exp(torch.randn(d, n, generator=g) * 0.5),
                   f"D_{tag}": torch.randn(d, generator=g), f"delta_bias_{tag}": torch.randn(d, generator=g)})
    kw["z"] = r(b, length, d)
    return kw


@pytest.mark.parametrize("impl", sorted(selective_scan.IMPLEMENTATIONS))
@pytest.mark.parametrize("b,length,d,n,dtype", [(1, 1, 7, 4, torch.float32), (2, 37, 24, 16, torch.float32),
                                                (1, 19, 16, 5, torch.float16), (1, 11, 9, 16, torch.bfloat16)])
def test_scan_implementations_match_reference(impl, b, length, d, n, dtype):
    kw = scan_kwargs(b, length, d, n, dtype)
    got = selective_scan.IMPLEMENTATIONS[impl](**kw)
    want = selective_scan.bidirectional_scan_ref(**kw)
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    assert got.dtype == dtype and got.shape == want.shape
    assert_close(got.float(), want.float(), tol, tol, f"{impl} scan")


@pytest.mark.parametrize("impl", sorted(pyramid.IMPLEMENTATIONS))
@pytest.mark.parametrize("scales,order", [((0.5, 1.0, 2.0), "scale_wise"), ((0.25, 1.0), "frame_wise")])
def test_pyramid_implementations_match_reference(impl, scales, order):
    head = HeadConfig(d_model=24, scales=scales, order=order, layer_norm_eps=1e-3)
    pyr = FeaturePyramid(head, VisionConfig(patch_size=56, output_dim=24))  # 4 x 4 patch grid
    tokens = torch.randn(2, 3, 17, 24)
    got = pyramid.IMPLEMENTATIONS[impl](tokens, pyr, scales, order, head.layer_norm_eps)
    want = pyramid.pyramid_sequence_ref(tokens, pyr, scales, order, head.layer_norm_eps)
    assert got.shape == (2, pyramid.sequence_length(3, 4, scales, order), 24)
    assert_close(got, want, 1e-4, 1e-4, f"{impl} pyramid")
    # The configured epsilon is the one used: another value changes the result.
    other = pyramid.IMPLEMENTATIONS[impl](tokens, pyr, scales, order, 1e-1)
    assert (other - got).abs().max() > 1e-3


def test_folded_output_map_and_derived_weights_refresh():
    block = MuseBlock(TINY.head).eval()  # in training mode with grad on, derived values are never cached
    w = block.derived_weights()
    y = torch.randn(5, TINY.head.d_inner)
    with torch.no_grad():
        expected = block.temporal_fc(block.mamba.out_proj(y))
    assert_close(torch.nn.functional.linear(y, w["w_out"], block.temporal_fc.bias), expected, 1e-5, 1e-5, "fold")
    assert_close(w["A_f"], -torch.exp(block.mamba.A_log), 0, 0, "precomputed A")
    assert block.derived_weights() is w  # computed once
    with torch.no_grad():
        block.mamba.out_proj.weight.mul_(2.0)  # in place: the version counter moves
    w2 = block.derived_weights()
    assert w2 is not w
    assert_close(w2["w_out"], 2 * w["w_out"], 1e-6, 1e-6, "refreshed fold")


@pytest.mark.parametrize("name", [n for n in backends.names() if n not in ("auto", "ort")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_on_every_backend_matches_reference(name, dtype):
    head = randomize(MuseHead(TINY.head)).to(dtype)
    x = torch.randn(1, 9, TINY.head.d_model).to(dtype)
    with torch.no_grad():
        got, want = head(x, backends.resolve(name, "cpu")).float(), head(x).float()
    # bf16: two blocks of bf16 GEMMs, LayerNorm and scan; about one bf16 ulp of outputs up to |3|.
    tol = (5e-5, 1e-4) if dtype == torch.float32 else (0.03, 2.0 ** -7)
    assert_close(got, want, *tol, f"{name} head {dtype}")


def test_resolve_backend():
    assert backends.resolve("auto", "cpu").name == "cpp"  # this box and CI have a compiler
    assert backends.resolve(None, "cpu").name == "cpp"
    assert backends.resolve("reference", "cpu").name == "reference"
    assert backends.resolve("triton", "cpu").name == "triton"  # tests run under TRITON_INTERPRET=1
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.resolve("cuda", "cpu")
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        backends.resolve("cpp", "meta")


def test_backend_names_are_one_list():
    """The engine's registry is the list; the CLI, the benchmarks and the torch op agree with it."""
    import argparse

    from muse_tvr.bench import registry
    from muse_tvr.commands import add_backend_arg
    from muse_tvr.kernels.contracts import BI_SELECTIVE_SCAN
    names = backends.names()
    assert names[0] == "auto" and {"reference", "cpu-chunked", "cpp", "triton", "ort"} <= set(names)
    p = argparse.ArgumentParser()
    add_backend_arg(p)
    assert tuple(next(a for a in p._actions if a.dest == "backend").choices) == names
    assert registry.ENGINE_BACKENDS == names[1:]
    # The torch op's CPU kernel is the C++ scan the "cpp" backend runs.
    kw = scan_kwargs(1, 5, 8, 4, torch.float32)
    got = BI_SELECTIVE_SCAN.torch_op()(*[kw[t.name] for t in BI_SELECTIVE_SCAN.inputs])
    assert_close(got, backends.get("cpp").scan(**kw), 0, 0, "torch.ops.muse.bi_selective_scan on CPU")


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


def test_triton_backend_refuses_an_interpreter_that_cannot_work(monkeypatch):
    import numpy
    import triton
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.5.0")
    with pytest.raises(ValueError, match=r"needs triton >= 3.8 or numpy < 2.4"):
        backends.resolve("triton", "cpu")
