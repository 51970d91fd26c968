"""The op contracts: torch op, ONNX schema, exporter node, function bodies and ORT kernels all agree."""
import ctypes
import inspect

import onnx
import pytest
import torch

from helpers import assert_close
from muse_tvr.kernels import contracts
from muse_tvr.kernels.contracts import BI_SELECTIVE_SCAN, CONTRACTS, PLUGIN_ATTRIBUTES, PYRAMID_SEQUENCE
from muse_tvr.kernels.selective_scan import bidirectional_scan_ref


def test_scan_contract_follows_the_reference_signature():
    ref_params = list(inspect.signature(bidirectional_scan_ref).parameters)
    assert [t.name for t in BI_SELECTIVE_SCAN.inputs] == ref_params
    assert [t.name for t in BI_SELECTIVE_SCAN.outputs] == ["y"]


@pytest.mark.parametrize("c", CONTRACTS, ids=lambda c: c.name)
def test_torch_op_schema_matches_contract(c):
    op = c.torch_op()
    args = op._schema.arguments
    assert [a.name for a in args] == [t.name for t in c.inputs] + [a.name for a in c.attributes]
    assert len(op._schema.returns) == len(c.outputs)


@pytest.mark.parametrize("c", CONTRACTS, ids=lambda c: c.name)
def test_onnx_schema_matches_contract(c):
    contracts.register_onnx_schemas()
    s = onnx.defs.get_schema(c.name, c.version, c.domain)
    assert [i.name for i in s.inputs] == [t.name for t in c.inputs]
    assert [o.name for o in s.outputs] == [t.name for t in c.outputs]
    assert set(s.attributes) == {a.name for a in c.all_attributes()}
    assert set(PLUGIN_ATTRIBUTES) <= set(s.attributes)
    types = {tc.type_param_str: set(tc.allowed_type_strs) for tc in s.type_constraints}
    assert types["T"] == {"tensor(float)", "tensor(float16)"}
    assert onnx.defs.get_schema(c.name, c.version, c.domain).name not in {x.name for x in onnx.defs.get_all_schemas()
                                                                          if x.domain == ""}


def test_node_attributes_carry_tensorrt_fields():
    attrs = BI_SELECTIVE_SCAN.node_attributes(aot=True)
    assert attrs == {"plugin_namespace": "muse", "plugin_version": "1", "aot": 1}
    assert BI_SELECTIVE_SCAN.plugin_name == "muse::BiSelectiveScan"
    with pytest.raises(ValueError, match="unknown attributes"):
        BI_SELECTIVE_SCAN.node_attributes({"bogus": 1})
    with pytest.raises(ValueError, match="required"):
        PYRAMID_SEQUENCE.node_attributes({"grid": 7})


def _scan_inputs(b, length, d, n, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    act = [r(b, length, d), r(b, length, d) - 1, r(b, length, n), r(b, length, n),
           r(b, length, d), r(b, length, d) - 1, r(b, length, n), r(b, length, n), r(b, length, d)]
    par = [-torch.rand(d, n, generator=g) * 3 - 0.1, -torch.rand(d, n, generator=g) * 3 - 0.1,
           r(d), r(d), r(d) * 0.5, r(d) * 0.5]
    return [a.to(dtype) for a in act] + par


def test_torch_scan_op_equals_reference():
    x = _scan_inputs(2, 9, 12, 4)
    assert_close(BI_SELECTIVE_SCAN.call(x), bidirectional_scan_ref(*x), 2e-5, 2e-5, "torch op (the C++ scan on CPU)")


def test_torch_pyramid_op_equals_model_pyramid():
    from onnx_helpers import tiny_model

    from muse_tvr.kernels.pyramid import flat_params

    m = tiny_model()
    g = m.config.vision.grid
    tokens = torch.randn(2, 3, 1 + g * g, m.config.embed_dim)
    want = m.pyramid(tokens)
    got = PYRAMID_SEQUENCE.call([tokens, flat_params(m.pyramid, m.config.head.scales)],
                                {"scales": list(m.config.head.scales), "grid": g})
    assert_close(got, want, 1e-6, 0, "pyramid op")


def test_function_bodies_match_contracts():
    from onnx_helpers import exported

    from muse_tvr.export.onnx_export import bi_selective_scan_function

    fn = bi_selective_scan_function(18)
    c = BI_SELECTIVE_SCAN
    assert (fn.domain, fn.name) == (c.domain, c.name)
    assert list(fn.input) == [t.name for t in c.inputs] and list(fn.output) == [t.name for t in c.outputs]
    assert set(fn.attribute) == {a.name for a in c.all_attributes()}
    pfn = [f for f in onnx.load(str(exported("head", pyramid="op")["portable"].path)).functions
           if f.name == PYRAMID_SEQUENCE.name][0]
    assert pfn.domain == PYRAMID_SEQUENCE.domain and pfn.input[0] == "tokens"


def test_ort_library_registers_the_contract_kernels():
    from onnx_helpers import built_cpp

    lib = ctypes.CDLL(str(built_cpp() / "libmuse_ort_ops.so"))
    lib.MuseOrtOpsKernels.restype = ctypes.c_char_p
    registered = {tuple(line.split(",")) for line in lib.MuseOrtOpsKernels().decode().split()}
    # The pyramid has no C++ kernel by design (docs/onnx.md): ORT runs its function body or the
    # decomposed pyramid. Every other contract must be fully covered.
    assert registered == set(BI_SELECTIVE_SCAN.ort_kernels())
    assert {k[1] for k in registered} == {c.name for c in CONTRACTS} - {PYRAMID_SEQUENCE.name}
