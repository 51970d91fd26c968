"""TensorRT plugins and engine builder.

Runs here (no TensorRT, no GPU): the plugin contract (ONNX nodes from the exporter <-> plugin registration
signature <-> op contract), the scan kernel's AOT compile for sm_80/89/90 with TensorRT's ABI checks, the
launch recipe (int32 args + grid) executed through the interpreter against the reference, the shape
arithmetic, and the builder's pure parts. The real build + run are at the end, behind
pytest.importorskip("tensorrt"): they run wherever TensorRT and a GPU exist and are skipped here.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from muse_tvr.export import tensorrt_build as tb
from muse_tvr.export import tensorrt_plugins as tp
from muse_tvr.kernels.contracts import BI_SELECTIVE_SCAN, CONTRACTS, PLUGIN_ATTRIBUTES, PLUGIN_NAMESPACE, PYRAMID_SEQUENCE

from helpers import assert_close


def register_signature_problems(sig: tp.PluginSignature, signature: inspect.Signature, tensor_desc: type) -> list[str]:
    """The documented `tensorrt.plugin.register` rules applied to our derived signature (empty = fine):
    namespace not reserved, no '.' in names, annotated parameters without defaults, all tensors before all
    attributes, attribute names allowed and of a serialisable type, a return annotation."""
    problems = []
    if sig.namespace in tp.RESERVED_NAMESPACES:
        problems.append(f"namespace {sig.namespace!r} is reserved by TensorRT")
    if "." in sig.namespace or "." in sig.name:
        problems.append(f"plugin id {sig.plugin_id!r} must not contain '.'")
    if sig.version != tp.QDP_PLUGIN_VERSION:
        problems.append(f"quickly-deployable plugins always have version {tp.QDP_PLUGIN_VERSION!r}; "
                        f"the contract says {sig.version!r}")
    seen_attr = False
    serialisable = (int, float, str, bool, bytes)
    for p in signature.parameters.values():
        if p.annotation is inspect.Parameter.empty:
            problems.append(f"parameter {p.name!r} has no annotation")
            continue
        if p.default is not inspect.Parameter.empty:
            problems.append(f"parameter {p.name!r} has a default value")
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            problems.append(f"parameter {p.name!r} is not positional-or-keyword")
        if p.annotation is tensor_desc:
            if seen_attr:
                problems.append(f"tensor {p.name!r} comes after an attribute")
        else:
            seen_attr = True
            if p.name in tp.DISALLOWED_ATTRIBUTE_NAMES:
                problems.append(f"attribute name {p.name!r} is not allowed")
            origin = getattr(p.annotation, "__origin__", None)
            if p.annotation not in serialisable and origin is not np.ndarray:
                problems.append(f"attribute {p.name!r} has unsupported type {p.annotation}")
    if signature.return_annotation is inspect.Signature.empty:
        problems.append("register function has no return annotation")
    return problems


class DescType:
    """Stands in for tensorrt.plugin.TensorDesc as the annotation CLASS only: the signature rules we check
    are about which parameters carry that annotation, not about TensorRT's behaviour."""


# ================================================================================= exported models
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The TINY head exported as the `plugin` variant (decomposed pyramid) and as `plugin-nofunc` with the
    pyramid as one custom node: every custom node the exporter can write."""
    from muse_tvr.engine.config import get_config
    from muse_tvr.engine.model import MuseModel
    from muse_tvr.export.onnx_export import export_part

    torch.manual_seed(0)
    model = MuseModel(get_config("tiny")).eval()
    out = tmp_path_factory.mktemp("trt_onnx")
    files = export_part(model, "head", out, "float32", variants=("plugin",), log=lambda *a: None)
    files += export_part(model, "head", out / "op", "float32", variants=("plugin-nofunc",), pyramid="op",
                         log=lambda *a: None)
    return {f.variant: f.path for f in files}


def _custom_nodes(path):
    import onnx

    from muse_tvr.kernels.contracts import register_onnx_schemas

    register_onnx_schemas()
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    return [n for n in proto.graph.node if n.domain == "muse"], types


def test_exported_nodes_match_plugin_registrations(exported):
    """Every custom node: op_type == plugin name, plugin_namespace/plugin_version == the registration's,
    aot == 1 in plugin exports, input count and op-specific attributes == the register signature,
    attribute ONNX types == the plugin field types, input dtypes accepted by the plugin's type check."""
    from onnx import AttributeProto, TensorProto

    onnx_kind = {AttributeProto.INT: "int", AttributeProto.FLOAT: "float", AttributeProto.STRING: "string",
                 AttributeProto.FLOATS: "floats", AttributeProto.INTS: "ints"}
    trt_name = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16"}
    seen = set()
    for variant, path in exported.items():
        nodes, types = _custom_nodes(path)
        assert nodes, f"{variant} export has no custom nodes"
        for node in nodes:
            contract = next(c for c in CONTRACTS if c.name == node.op_type)
            n_var = len(node.input) - (len(contract.inputs) - 1) if contract.inputs[-1].variadic else None
            sig = tp.plugin_signature(contract, n_var)
            attrs = {a.name: a for a in node.attribute}
            assert node.op_type == sig.name and sig.plugin_id == f"{PLUGIN_NAMESPACE}::{node.op_type}"
            assert attrs["plugin_namespace"].s.decode() == sig.namespace
            assert attrs["plugin_version"].s.decode() == sig.version == tp.QDP_PLUGIN_VERSION
            assert attrs["aot"].i == 1
            assert len(node.input) == len(sig.inputs)
            assert len(node.output) == len(sig.outputs)
            op_attrs = {k: v for k, v in attrs.items() if k not in PLUGIN_ATTRIBUTES}
            assert sorted(op_attrs) == sorted(a for a, _ in sig.attributes)
            for name, kind in sig.attributes:
                assert onnx_kind[op_attrs[name].type] == kind, name
            tp.check_io_types(sig, [trt_name[types[i]] for i in node.input])
            reg = tp.python_signature(sig, DescType, "register", DescType)
            assert list(reg.parameters) == list(sig.inputs) + [a for a, _ in sig.attributes]
            assert register_signature_problems(sig, reg, DescType) == []
            seen.add(node.op_type)
    assert seen == {c.name for c in CONTRACTS}


def test_builder_accepts_scan_plugin_export_and_refuses_jit_only_pyramid(exported):
    facts = tb.read_onnx_facts(exported["plugin"])
    assert {n["op_type"] for n in facts.custom_nodes} == {BI_SELECTIVE_SCAN.name}
    assert tb.plugin_problems(facts) == []
    op_facts = tb.read_onnx_facts(exported["plugin-nofunc"])
    problems = tb.plugin_problems(op_facts)
    assert len(problems) == 1 and "MusePyramidSequence has no AOT implementation" in problems[0]
    assert tb.plugin_problems(op_facts, allow_jit=True) == []
    assert op_facts.pyramid_weight_count() == len(tp.plugin_signature(PYRAMID_SEQUENCE, 26).inputs) - 1


def test_builder_profile_from_export(exported):
    facts = tb.read_onnx_facts(exported["plugin"])
    assert [i.name for i in facts.inputs] == ["tokens", "mask"] and facts.precision == "float32"
    prof = tb.derive_profile(facts, batch=(1, 4, 16), frames=(1, 3, 6))
    g = 7
    assert prof["tokens"] == ((1, 1, 1 + g * g, 64), (4, 3, 1 + g * g, 64), (16, 6, 1 + g * g, 64))
    assert prof["mask"] == ((1, 1), (4, 3), (16, 6))
    assert tb.derive_profile(facts)["mask"][2] == (32, facts.max_frames)  # sidecar's max_frames
    over = tb.derive_profile(facts, max_shapes=tb.parse_shapes("mask:8x5,tokens:8x5x50x64"))
    assert over["mask"][2] == (8, 5)
    with pytest.raises(ValueError, match="static dim 64"):
        tb.derive_profile(facts, max_shapes=tb.parse_shapes("tokens:8x5x50x32"))
    with pytest.raises(ValueError, match="unknown inputs"):
        tb.derive_profile(facts, min_shapes={"frames": (1,)})


# ======================================================================================== signatures
def test_plugin_signatures_follow_contracts():
    scan = tp.plugin_signature(BI_SELECTIVE_SCAN)
    assert scan.inputs == tuple(t.name for t in BI_SELECTIVE_SCAN.inputs) and scan.has_aot
    types = [s.strip() for s in scan.type_string().split(",")]
    assert len(types) == len(BI_SELECTIVE_SCAN.inputs) + len(BI_SELECTIVE_SCAN.outputs)
    for ty, spec in zip(types, BI_SELECTIVE_SCAN.inputs + BI_SELECTIVE_SCAN.outputs):
        assert ty == ("FP32|FP16" if spec.type_var == "T" else "FP32"), spec.name
    aot = tp.python_signature(scan, DescType, "aot_impl")
    assert list(aot.parameters)[-2:] == ["outputs", "tactic"]
    with pytest.raises(ValueError, match="variadic"):
        tp.plugin_signature(PYRAMID_SEQUENCE)
    pyr = tp.plugin_signature(PYRAMID_SEQUENCE, 3)
    assert pyr.inputs == ("tokens", "weights_0", "weights_1", "weights_2") and not pyr.has_aot
    reg = tp.python_signature(pyr, DescType, "register", DescType)
    assert reg.parameters["scales"].annotation.__origin__ is np.ndarray
    assert reg.parameters["grid"].annotation is int and reg.parameters["layer_norm_eps"].annotation is float
    # the rule checker itself catches what TensorRT's register would reject
    bad = inspect.Signature([inspect.Parameter("grid", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
                             inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=DescType)])
    assert len(register_signature_problems(pyr, bad, DescType)) == 2  # tensor after attr, no return type


def test_io_type_check():
    sig = tp.plugin_signature(BI_SELECTIVE_SCAN)
    tp.check_io_types(sig, ["FP16"] * 9 + ["FP32"] * 6)
    with pytest.raises(ValueError, match="share one type"):
        tp.check_io_types(sig, ["FP16"] * 8 + ["FP32"] * 7)
    with pytest.raises(ValueError, match="must be FP32"):
        tp.check_io_types(sig, ["FP16"] * 10 + ["FP32"] * 5)
    with pytest.raises(ValueError, match="15"):
        tp.check_io_types(sig, ["FP32"] * 3)


# ============================================================================================ shapes
def test_shape_functions():
    from muse_tvr.kernels.pyramid import scale_grid

    assert tp.scan_output_dims((2, 9, 32)) == (2, 9, 32)
    with pytest.raises(ValueError, match="rank 3"):
        tp.scan_output_dims((2, 9))
    for scales, grid in (([0.5, 1.0, 2.0], 7), ([1.0], 7), ([0.25, 0.5, 1.0, 2.0], 8)):
        per_frame = 1 + sum(scale_grid(grid, s) ** 2 for s in scales)
        assert tp.pyramid_output_dims((3, 5, 1 + grid * grid, 16), scales, grid) == (3, 5 * per_frame, 16)
    # against the op's own reference on real tensors (ViT-B/32 grid 7, scales 0.5/1/2)
    from muse_tvr.engine.config import get_config
    from muse_tvr.engine.model import MuseModel
    from muse_tvr.kernels.pyramid import pyramid_sequence_ref

    model = MuseModel(get_config("tiny")).eval()
    cfg = model.config
    g, c = cfg.vision.grid, cfg.embed_dim
    tokens = torch.randn(2, 3, 1 + g * g, c)
    with torch.no_grad():
        seq = pyramid_sequence_ref(tokens, model.pyramid, cfg.head.scales)
    assert tuple(seq.shape) == tp.pyramid_output_dims(tuple(tokens.shape), cfg.head.scales, g)
    assert seq.shape[1] == cfg.sequence_length(3)


def test_scan_int_args_are_contiguous_strides():
    """The int32 arguments derived from shapes equal the strides of contiguous tensors (what TensorRT's
    LINEAR plugin I/O is), in the kernel's ABI order."""
    bsz, length, d, n = 2, 9, 24, 16
    u = torch.empty(bsz, length, d)
    bc = torch.empty(bsz, length, n)
    vals = tp.scan_int_args(length, d, n)
    assert (vals["s_ub"], vals["s_ul"]) == u.stride()[:2] == (vals["s_dtb"], vals["s_dtl"]) == (vals["s_zb"], vals["s_zl"])
    assert (vals["s_bcb"], vals["s_bcl"]) == bc.stride()[:2]
    spec = tp.scan_kernel_spec("FP32", n)
    order = [k for k, v in spec["signature"].items() if v == "i32"]
    assert tp.ordered_int_args(spec, vals) == [vals[k] for k in order]
    with pytest.raises(ValueError, match="missing"):
        tp.ordered_int_args(spec, {"L": 1})


def test_aot_launch_recipe_runs_on_interpreter():
    """Launch the scan kernel exactly as the TensorRT AOT plugin describes it: pointers in contract order,
    then the int32 args in ABI order, then the output, on the plugin's grid with the GPU block size. Run
    under the interpreter and compare with the reference."""
    from muse_tvr.kernels.selective_scan import bidirectional_scan_ref

    gen = torch.Generator().manual_seed(3)
    bsz, length, d, n = 2, 7, 20, 16  # D not a multiple of BLOCK_D (16): the grid's ceil-div matters
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    seq = [r(bsz, length, d) for _ in range(2)]
    args = {"u_f": seq[0], "delta_f": r(bsz, length, d) * 0.5, "B_f": r(bsz, length, n), "C_f": r(bsz, length, n),
            "u_b": seq[1], "delta_b": r(bsz, length, d) * 0.5, "B_b": r(bsz, length, n), "C_b": r(bsz, length, n),
            "z": r(bsz, length, d), "A_f": -torch.rand(d, n, generator=gen) - 0.1,
            "A_b": -torch.rand(d, n, generator=gen) - 0.1, "D_f": r(d), "D_b": r(d), "delta_bias_f": r(d) * 0.1,
            "delta_bias_b": r(d) * 0.1}
    sig = tp.plugin_signature(BI_SELECTIVE_SCAN)
    ins = [args[name].contiguous() for name in sig.inputs]
    spec = tp.scan_kernel_spec("FP32", n)
    block_d = spec["constexprs"]["BLOCK_D"]
    launch = tp.scan_launch(bsz, d, block_d, spec["options"]["num_warps"], 0, lambda a, b: -(-a // b))
    grid = (launch["grid_x"], launch["grid_y"], launch["grid_z"])
    assert launch["block_x"] == 32 * spec["options"]["num_warps"]
    out = torch.empty(bsz, length, d)
    ints = tp.ordered_int_args(spec, tp.scan_int_args(length, d, n))
    # The interpreter runs no inline PTX: FAST=False picks tl.exp2/log2 for the ex2/lg2.approx forms.
    cx = {**spec["constexprs"], "FAST": False}
    spec["fn"][grid](*ins, *ints, out, **cx, num_warps=spec["options"]["num_warps"])
    expected = bidirectional_scan_ref(*ins)
    assert_close(out, expected, atol=1e-5, rtol=1e-4, name="scan via AOT launch recipe")


# ====================================================================================== AOT compile
ARCHS = (80, 89, 90)


@pytest.fixture(scope="module")
def compiled_scan():
    """The scan kernel compiled for each architecture and activation dtype, PTX capped for the default
    deployment driver, in a separate process (this one runs the interpreter)."""
    from muse_tvr.kernels.aot import AotRequest, compile_isolated

    reqs = {}
    for arch in ARCHS:
        for act in ("FP32", "FP16"):
            kw = (("dtype", tp.TRITON_TYPE[act]), ("d_state", 16), ("block_d", tp.scan_block_d()))
            reqs[(arch, act)] = AotRequest(tp.SCAN_KERNEL_MODULE, tp.SCAN_KERNEL_SPEC, arch, kw, tp.ptx_cap(arch))
    # one capped harder than the default: an sm_80 plan for CUDA 11.8 drivers
    reqs[(80, "old-driver")] = AotRequest(tp.SCAN_KERNEL_MODULE, tp.SCAN_KERNEL_SPEC, 80,
                                          (("dtype", "fp16"), ("d_state", 16), ("block_d", tp.scan_block_d())),
                                          tp.ptx_cap(80, "11.8"))
    results = compile_isolated(reqs.values())
    return {key: results[req] for key, req in reqs.items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("act", ["FP32", "FP16"])
def test_scan_aot_compile_abi(compiled_scan, arch, act):
    kernel = compiled_scan[(arch, act)]
    assert not isinstance(kernel, str), kernel
    spec = tp.scan_kernel_spec(act, 16)
    cap = tp.ptx_cap(arch)
    tp.check_scan_kernel(spec, kernel, cap)  # raises with every ABI / scratch / PTX-cap problem
    assert kernel.global_scratch_size == 0 and kernel.arch == arch
    assert kernel.ptx_version <= (cap // 10, cap % 10)
    assert kernel.ptx_target.startswith(f"sm_{arch}")
    assert f".entry {kernel.name}" in kernel.ptx and len(kernel.cubin) > 0  # ptxas accepted the capped PTX
    n_ints = sum(1 for v in spec["signature"].values() if v == "i32")
    assert kernel.n_params == 15 + n_ints + 1 + 2  # inputs, int32s, output, Triton's two scratch pointers


def test_ptx_cap_for_old_driver(compiled_scan):
    k = compiled_scan[(80, "old-driver")]
    assert not isinstance(k, str), k
    assert k.ptx_version == (7, 8)
    assert tp.ptx_cap(90, "12.4") == 84 and tp.ptx_cap(90, "13.0") == 90
    with pytest.raises(ValueError, match="sm_90 needs PTX ISA >= 8.0"):
        tp.ptx_cap(90, "11.8")


# ============================================================================ builder pure parts
def test_precision_settings():
    assert tb.precision_settings((10, 13), "float32", "auto") == {"strongly_typed": False, "flags": [],
                                                                   "precision": "fp32"}
    assert tb.precision_settings((10, 13), "float16", "auto")["flags"] == ["FP16"]
    assert tb.precision_settings((10, 13), "float32", "bf16")["flags"] == ["BF16"]
    s = tb.precision_settings((11, 0), "float16", "auto")
    assert s["strongly_typed"] and s["flags"] == [] and s["precision"] == "fp16"
    with pytest.raises(ValueError, match="strongly typed.*float16 export"):
        tb.precision_settings((11, 1), "float32", "fp16")
    with pytest.raises(ValueError):
        tb.precision_settings((10, 9), "float32", "int8")


def test_shape_parsing():
    assert tb.parse_shapes("frames:2x12x3x224x224,mask:2x12") == {"frames": (2, 12, 3, 224, 224), "mask": (2, 12)}
    assert tb.parse_range("4", "batch") == (4, 4, 4) and tb.parse_range("1,8,32", "batch") == (1, 8, 32)
    for bad in ("frames", "frames:2xA", "x:0x1"):
        with pytest.raises(ValueError):
            tb.parse_shapes(bad)
    with pytest.raises(ValueError, match="MIN <= OPT <= MAX"):
        tb.parse_range("8,4,32", "batch")


def test_missing_tensorrt_error_names_what_to_install(exported):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(ImportError, match="Install TensorRT >= 10.9"):
        tb.build_engine(exported["plugin"], "/nonexistent/x.plan")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tb.build_engine("/nonexistent/model.onnx", "/nonexistent/x.plan")


# ============================================================== real TensorRT (skipped without it)
def test_build_and_run_plan_with_tensorrt(exported, tmp_path):
    """Build the head plan with the AOT scan plugin and compare its output with PyTorch."""
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is importable but no CUDA GPU is visible")
    import json

    from muse_tvr.engine.config import get_config
    from muse_tvr.engine.model import MuseModel
    from muse_tvr.export.graph import HeadGraph

    plan = tmp_path / "head.plan"
    report = tb.build_engine(exported["plugin"], plan, batch=(1, 2, 4), frames=(1, 3, 6),
                             timing_cache=tmp_path / "cache.bin", layer_info=tmp_path / "layers.json")
    assert plan.stat().st_size > 0 and (tmp_path / "cache.bin").stat().st_size > 0
    layers = json.loads((tmp_path / "layers.json").read_text())
    assert any("BiSelectiveScan" in json.dumps(layer) for layer in layers.get("Layers", []))
    torch.manual_seed(0)
    model = MuseModel(get_config("tiny")).eval()
    g, c = model.config.vision.grid, model.config.embed_dim
    tokens = torch.randn(2, 3, 1 + g * g, c)
    mask = torch.ones(2, 3)
    with torch.no_grad():
        expected = HeadGraph(model).eval()(tokens, mask)
    got = tb.run_plan(plan, {"tokens": tokens.cuda(), "mask": mask.cuda()})["embedding"].cpu()
    assert_close(got, expected, atol=1e-3, rtol=1e-3, name=f"TensorRT {report.trt_version} plan vs PyTorch")
