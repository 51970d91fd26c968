"""ONNX export of the TINY model: every variant checks, carries the contract's nodes, and runs in ORT by both
routes (op library, portable function bodies) with the PyTorch result; bad inputs give clear errors."""
import json

import numpy as np
import onnx
import pytest
import torch

from muse_tvr.kernels.contracts import BI_SELECTIVE_SCAN, register_onnx_schemas
from muse_tvr.export.onnx_export import cast_model, example_inputs
from muse_tvr.export.ort_runner import OrtModel
from onnx_helpers import built_cpp, exported, tiny_model

CASES = [("head", "float32", "decomposed"), ("head", "float16", "decomposed"), ("video", "float32", "decomposed"),
         ("head", "float32", "op")]
TOL = {"float32": 1e-5, "float16": 2e-3}


def _reference(part, dtype, inputs):
    m = cast_model(tiny_model(), getattr(torch, dtype))
    if part == "video":
        return m.encode_video(inputs["frames"], inputs["mask"]).numpy()
    if part == "head":
        return m.encode_tokens(inputs["tokens"], inputs["mask"]).numpy()
    return m.encode_text(inputs["ids"]).numpy()


@pytest.mark.parametrize("part,dtype,pyramid", CASES, ids=lambda v: str(v))
def test_variants_check_and_carry_contract_nodes(part, dtype, pyramid):
    files = exported(part, dtype, pyramid)
    assert set(files) == {"plugin", "portable", "plugin-nofunc"}
    register_onnx_schemas()
    for variant, f in files.items():
        proto = onnx.load(str(f.path))
        onnx.checker.check_model(proto, full_check=True)
        assert {o.version for o in proto.opset_import if o.domain == ""} >= {18} or \
            max(o.version for o in proto.opset_import if o.domain == "") >= 18
        scans = [n for n in proto.graph.node if n.op_type == BI_SELECTIVE_SCAN.name]
        assert len(scans) == tiny_model().config.head.depth
        for n in scans:
            assert n.domain == "muse" and len(n.input) == len(BI_SELECTIVE_SCAN.inputs)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["plugin_namespace"] == b"muse" and attrs["plugin_version"] == b"1"
            assert attrs["aot"] == (0 if variant == "portable" else 1)
        assert bool(proto.functions) == (variant != "plugin-nofunc")
        meta = json.loads(f.sidecar.read_text())
        assert [i["name"] for i in meta["inputs"]] == ["frames" if part == "video" else "tokens", "mask"]
        assert meta["inputs"][0]["shape"][:2] == ["batch", "frames"]
        assert meta["dynamic_axes"]["mask"] == {"0": "batch", "1": "frames"}
        assert meta["outputs"][0] == {"name": "embedding", "dtype": "float32", "shape": ["batch", tiny_model().config.embed_dim]}
        assert {c["op_type"] for c in meta["custom_ops"]} >= {"BiSelectiveScan"}
        assert meta["inputs"][0]["dtype"] == dtype


@pytest.mark.parametrize("part,dtype,pyramid", CASES, ids=lambda v: str(v))
def test_ort_both_routes_match_pytorch(part, dtype, pyramid):
    files = exported(part, dtype, pyramid)
    # batch and frames differ from the export's example: the dynamic axes are exercised
    inputs = example_inputs(tiny_model().config, part, getattr(torch, dtype), batch=3, frames=2, seed=5)
    ref = _reference(part, dtype, inputs)
    lib = built_cpp() / "libmuse_ort_ops.so"
    routes = [("plugin-nofunc", "oplib"), ("portable", "oplib"), ("portable", "portable"), ("plugin", "portable")]
    if pyramid == "op":
        # The pyramid node has no C++ kernel (by design): it needs its function body.
        routes.remove(("plugin-nofunc", "oplib"))
        with pytest.raises(ValueError, match="MusePyramidSequence"):
            OrtModel(files["plugin-nofunc"].path, "oplib", lib)
    for variant, route in routes:
        out = OrtModel(files[variant].path, route, lib).run(inputs)["embedding"]
        np.testing.assert_allclose(out, ref, atol=TOL[dtype], rtol=0, err_msg=f"{variant} via {route}")


def test_text_export_matches_pytorch():
    f = exported("text")["plain"]
    onnx.checker.check_model(onnx.load(str(f.path)), full_check=True)
    inputs = example_inputs(tiny_model().config, "text", torch.float32, batch=4)
    out = OrtModel(f.path, "portable").run(inputs)["embedding"]
    np.testing.assert_allclose(out, _reference("text", "float32", inputs), atol=1e-5)


def test_runner_rejects_bad_inputs():
    f = exported("head")["portable"]
    m = OrtModel(f.path, "portable")
    good = example_inputs(tiny_model().config, "head", torch.float32)
    with pytest.raises(ValueError, match="missing \\['mask'\\]"):
        m.run(tokens=good["tokens"])
    with pytest.raises(ValueError, match="unknown \\['frames'\\]"):
        m.run(frames=good["tokens"], tokens=good["tokens"], mask=good["mask"])
    with pytest.raises(ValueError, match="'tokens' must be float32, got float64"):
        m.run(tokens=good["tokens"].double(), mask=good["mask"])
    with pytest.raises(ValueError, match="'tokens' dim 3 must be 64"):
        m.run(tokens=good["tokens"][..., :32], mask=good["mask"])
    with pytest.raises(ValueError, match="must have 2 dims"):
        m.run(tokens=good["tokens"], mask=good["mask"][0])
    with pytest.raises(ValueError, match="no function bodies"):
        OrtModel(exported("head")["plugin-nofunc"].path, "portable")


def test_compare_fails_loudly_beyond_tolerance():
    from muse_tvr.commands.compare import ToleranceError, compare_files

    files = list(exported("head").values())
    rows = compare_files(tiny_model(), files, built_cpp() / "libmuse_ort_ops.so", log=lambda *a: None)
    assert {r["runtime"] for r in rows} == {"ort+oplib", "ort-portable"}
    other = cast_model(tiny_model(), torch.float32)
    with torch.no_grad():
        other.head.MS_mamba[0].temporal_fc.bias.add_(1.0)  # the files no longer match this model
    with pytest.raises(ToleranceError, match="beyond tolerance"):
        compare_files(other, files, built_cpp() / "libmuse_ort_ops.so", log=lambda *a: None)


def test_portable_file_with_op_library_runs_the_cpp_kernel(tmp_path):
    """With the op library loaded, ORT must pick the C++ kernel over the function body (no Scan runs)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(built_cpp() / "libmuse_ort_ops.so"))
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(str(exported("head")["portable"].path), so, providers=["CPUExecutionProvider"])
    inputs = example_inputs(tiny_model().config, "head", torch.float32)
    sess.run(None, {k: v.numpy() for k, v in inputs.items()})
    events = json.loads(open(sess.end_profiling()).read())
    ops = {e["args"]["op_name"] for e in events if "op_name" in e.get("args", {})}
    assert "BiSelectiveScan" in ops and "Scan" not in ops
