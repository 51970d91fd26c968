"""Every Triton kernel of the project compiles ahead of time for sm_80, sm_89 and sm_90 on this CPU machine.

What TensorRT's AOT plugins need (docs/tensorrt.md) is checked on the real compiler output: the
PTX entry name, the parameter list (the kernel's own arguments in order, then exactly the scratch
pointers Triton appends, which TensorRT passes as null), zero global scratch, shared memory within the
architecture's limit, the `.target`, and a `.version` line that honours a requested PTX ISA cap.

The tests run with TRITON_INTERPRET=1 (tests/conftest.py), in which Triton cannot compile, so all kernels are
compiled once, in one clean child process (`aot.compile_isolated`); the tests then inspect the results.
"""
from __future__ import annotations

import re

import pytest

from muse_tvr.kernels import aot, triton_interpreting

ARCHS = (80, 89, 90)
PYRAMID = "muse_tvr.kernels.pyramid.triton_pyramid"

SPECS, ABSENT = aot.project_aot_specs()


def param_kinds(k) -> list[str]:
    """Each PTX parameter of a compiled kernel as "ptr" (64-bit global pointer), "i32", or its raw declaration."""
    kinds = []
    for p in k.params:
        if ".ptr" in p or ".u64" in p:
            kinds.append("ptr")
        elif re.search(r"\.(u32|s32|b32)\b", p):
            kinds.append("i32")
        else:
            kinds.append(p)
    return kinds


def expected_param_kinds(signature: dict) -> list[str]:
    """The PTX parameter kinds a kernel with this Triton signature should have, scratch pointers included."""
    kinds = []
    for t in signature.values():
        if t == "constexpr":
            continue
        kinds.append("ptr" if t.startswith("*") else ("i32" if t in ("i32", "u32") else t))
    return kinds + ["ptr"] * aot.appended_params_for_this_triton()




def _req(name: str, arch: int, dtype: str = "bf16", ptx_version: int | None = None) -> aot.AotRequest:
    return aot.AotRequest(SPECS[name][0], name, arch, (("dtype", dtype),), ptx_version)


# bf16 everywhere (the deployment dtype); fp32 for the pyramid GEMM kernels on sm_89, whose 99 KiB of
# shared memory is the tightest limit and whose fp32 tiles are the largest.
REQUESTS = [_req(name, arch) for name in SPECS for arch in ARCHS]
REQUESTS += [_req(n, 89, "fp32") for n in ("pyramid_stage1_upsample2", "pyramid_stage2_conv3x3") if n in SPECS]
CAPPED = [_req("pyramid_cls_copy", 80, ptx_version=70), _req("pyramid_stage2_conv3x3", 90, ptx_version=80)]
CAPPED += [_req(name, 80, ptx_version=78) for name, (mod, _) in SPECS.items() if mod != PYRAMID][:1]


@pytest.fixture(scope="module")
def compiled():
    return aot.compile_isolated(REQUESTS + CAPPED)


def _kernel(compiled, req) -> aot.AotKernel:
    k = compiled[req]
    if isinstance(k, str):
        pytest.fail(f"{req.label} did not compile: {k}")
    return k


def test_all_kernel_modules_provide_specs():
    missing = {m: why for m, why in ABSENT.items()}
    assert PYRAMID not in missing, missing.get(PYRAMID)
    if missing:
        pytest.skip(f"part-A kernel modules without AOT_SPECS (not compiled): {missing}")
    assert {"pyramid_stage2_conv3x3", "pyramid_stage1_upsample2"} <= set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_abi_order(name):
    """Input pointers, then int32 scalars, then output pointers, then constexprs (no float scalars)."""
    spec = SPECS[name][1]()
    kinds = ["c" if t == "constexpr" else ("p" if t.startswith("*") else t) for t in spec["signature"].values()]
    text = "".join("p" if k == "p" else "i" if k == "i32" else "c" if k == "c" else "?" for k in kinds)
    assert "?" not in text, f"{name}: unsupported scalar types {spec['signature']}"
    import re
    assert re.fullmatch(r"p+i*p+c*", text), f"{name}: parameter order {text} is not inputs/ints/outputs/constexprs"
    assert set(spec["constexprs"]) == {k for k, t in spec["signature"].items() if t == "constexpr"}


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.label)
def test_kernel_compiles_for_tensorrt(compiled, req):
    k = _kernel(compiled, req)
    spec = SPECS[req.spec][1](**dict(req.kwargs))
    fn = spec["fn"]
    assert k.name == getattr(fn, "__name__", getattr(getattr(fn, "fn", None), "__name__", None))
    assert k.arch == req.arch and k.ptx_target.startswith(f"sm_{req.arch}")
    assert param_kinds(k) == expected_param_kinds(spec["signature"]), k.params
    assert k.n_appended == aot.appended_params_for_this_triton()
    assert k.global_scratch_size == 0
    assert 0 <= k.shared <= aot.MAX_SHARED_MEMORY[req.arch]
    assert k.ptx_version >= (7, 0) and len(k.cubin) > 0
    assert k.num_warps == spec["options"].get("num_warps", 4)
    assert aot.aot_problems(k, expected_appended=aot.appended_params_for_this_triton()) == []


@pytest.mark.parametrize("req", CAPPED, ids=lambda r: r.label)
def test_ptx_version_cap(compiled, req):
    k = _kernel(compiled, req)
    assert k.ptx_version == divmod(req.ptx_version, 10)
    assert f".version {req.ptx_version // 10}.{req.ptx_version % 10}" in k.ptx
    assert aot.aot_problems(k, max_ptx_version=divmod(req.ptx_version, 10)) == []
    uncapped = compiled.get(_req(req.spec, req.arch))
    if isinstance(uncapped, aot.AotKernel):  # the cap changes the ISA line only, not the ABI
        assert param_kinds(k) == param_kinds(uncapped)
        assert aot.aot_problems(uncapped, max_ptx_version=(6, 0)) != []


def test_ptx_cap_below_architecture_minimum_is_rejected():
    with pytest.raises(ValueError, match="cannot target sm_90"):
        aot.check_ptx_cap(90, 78)
    with pytest.raises(ValueError, match="cannot target sm_90"):
        aot.compile_isolated([_req("pyramid_cls_copy", 90, ptx_version=78)])


@pytest.mark.parametrize("value", ["1", "0", "", "true", "TRUE", "on", "yes", "y", "false", "off", "no", "2", " 1"])
def test_interpreting_reads_the_variable_as_triton_does(monkeypatch, value):
    """The project's one interpreter check agrees with Triton's own reading of TRITON_INTERPRET (which
    decides what @triton.jit builds), and is read at call time."""
    knobs = pytest.importorskip("triton.knobs")  # Triton >= 3.4
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert triton_interpreting() == bool(knobs.runtime.interpret)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not triton_interpreting()


def test_in_process_compile_refuses_interpreter_mode():
    spec = SPECS["pyramid_cls_copy"][1]()
    with pytest.raises(RuntimeError, match="compile_isolated"):
        aot.compile_spec(spec, arch=90)
