"""The static SASS report (muse_tvr.kernels.sass, docs/kernels.md "Static report") counts honestly.

A hand-made Triton kernel whose steady-state loop is known by hand: every step of its loop over T does one
`ex2.approx.ftz.f32` (exactly one MUFU.EX2) and FMAS dependent FMAs `acc * a + c` (FMAS FFMA, a and c
runtime scalars, so nothing folds), one element per lane. ptxas may unroll that loop by some U (it does, by
4, with Triton 3.8's ptxas); the counter must then find, in the steady-state (largest innermost) loop,
exactly U MUFU, exactly FMAS x U FFMA, and U x (1 + FMAS) instructions plus the loop's bookkeeping (counter
update, compare, backward branch: at most 4). Going from FMAS=4 to FMAS=8 adds exactly 4 x U instructions.

Runs under TRITON_INTERPRET=1 (tests/conftest.py): kernels compile in one child process
(`aot.compile_isolated`), nvdisasm / cuobjdump / ptxas (bundled with Triton) run here.
"""
from __future__ import annotations

import pytest

from muse_tvr.kernels import aot, sass

BOOKKEEPING_MAX = 4
CALIB = "muse_tvr.kernels.sass"


def test_tools_are_bundled():
    for tool in ("nvdisasm", "cuobjdump", "ptxas"):
        try:
            sass.tool_path(tool)
        except sass.SassToolMissing as e:
            pytest.fail(f"static SASS report cannot run: {e}")


@pytest.fixture(scope="module")
def calib():
    test_tools_are_bundled()
    reqs = {f: aot.AotRequest(CALIB, "sass_calibration", 90, (("fmas", f),)) for f in (4, 8)}
    res = aot.compile_isolated(reqs.values())
    out = {}
    for f, r in reqs.items():
        k = res[r]
        assert not isinstance(k, str), f"calibration kernel FMAS={f} failed to compile: {k}"
        instrs, labels = sass.disassemble(k.cubin)
        out[f] = (k, sass.innermost_loops(sass.find_loops(instrs, labels)))
    return out


def steady(loops):
    assert loops, "no backward-branch loop found in the calibration kernel"
    return max(loops, key=lambda lp: lp.instructions)


@pytest.mark.parametrize("fmas", [4, 8])
def test_calibration_loop_counts(calib, fmas):
    _, loops = calib[fmas]
    lp = steady(loops)
    unroll = lp.mufu.get("MUFU.EX2", 0)
    assert unroll in (1, 2, 4, 8), f"steady loop has {unroll} MUFU.EX2: {lp}"
    assert lp.mufu_total == unroll, lp.mufu
    assert lp.ops.get("FFMA", 0) == fmas * unroll, lp.ops
    extra = lp.instructions - unroll * (1 + fmas)
    assert 1 <= extra <= BOOKKEEPING_MAX, f"{extra} bookkeeping instructions: {lp.ops}"
    assert lp.forward_branches == 0
    # Every innermost loop (the unrolled one and any remainder) is a whole number of steps.
    for other in loops:
        assert other.ops.get("FFMA", 0) == fmas * other.mufu.get("MUFU.EX2", 0), other.ops


def test_calibration_scales_with_the_body(calib):
    l4, l8 = steady(calib[4][1]), steady(calib[8][1])
    unroll = l4.mufu_total
    assert l8.mufu_total == unroll
    assert l8.instructions - l4.instructions == 4 * unroll


def test_calibration_row_formula(calib):
    """analyze(): lane instructions per trip / (element, state) pairs per trip, 32 lanes x 1 warp, one
    element per lane and one "state" per element: (U(1 + FMAS) + bookkeeping) / U per pair, 1 MUFU per pair."""
    k, loops = calib[4]
    entry = sass.Entry("calibration", CALIB, "sass_calibration", {"fmas": 4}, {"num_warps": 1},
                       [sass.TimeLoop(f"loop{i}", 32, 1024, steps=lp.mufu_total) for i, lp in enumerate(loops)],
                       warps=1, hbm_bytes=256.0)
    row = sass.analyze(entry, k)
    assert "error" not in row, row
    lp = steady(loops)
    unroll = lp.mufu_total
    main = next(r for r in row["loops"] if r["instructions"] == lp.instructions)
    assert main["instr_per_elem_state"] == pytest.approx(lp.instructions / unroll, abs=1e-3)
    assert 5.0 < main["instr_per_elem_state"] <= 5.0 + BOOKKEEPING_MAX / unroll
    assert main["mufu_per_elem_state"] == pytest.approx(1.0)
    assert row["registers"] and row["spills"] == 0
    assert row["modeled_ms"] > 0 and row["model"]["bound"] in ("issue", "mufu", "hbm")


def test_model_matches_hand_arithmetic():
    # 132 x 4 warps, 1.98e6 instructions each: one warp per scheduler, 1 ms of issue; 1.98e6/8 MUFU each:
    # 8 clocks per warp MUFU on a scheduler's 4 lanes/clk, also 1 ms; 4.8 GB at 4.8 TB/s: 1 ms.
    m = sass.model_time(528, 1.98e6, 1.98e6 / 8, 4.8e9)
    assert m["issue_ms"] == pytest.approx(1.0) and m["mufu_ms"] == pytest.approx(1.0)
    assert m["hbm_ms"] == pytest.approx(1.0) and m["modeled_ms"] == pytest.approx(1.0)
    assert sass.model_time(529, 1.98e6, 0, 0)["issue_ms"] == pytest.approx(2.0)  # a tail wave


def test_scan_report_has_the_fields():
    rows = sass.report(90, ("bf16",), include_others=False)
    kernels = {r["kernel"] for r in rows}
    # B=16 picks the sequential kernel, B=1 the chunked pair (choose_variant).
    assert kernels == {"bidirectional_scan", "bidirectional_scan_chunk_state", "bidirectional_scan_chunk_out"}
    for r in rows:
        assert "error" not in r, r
        for key in ("kernel", "config", "registers", "spills", "shared_bytes", "loop_instructions",
                    "instr_per_elem_state", "mufu_per_elem_state", "modeled_ms"):
            assert r.get(key) is not None, (key, r["kernel"])
        assert r["config"]["BLOCK_D"] and r["config"]["N"] == 16
        assert r["mufu_per_elem_state"] >= 1.0  # at least the one exp per (element, state)
        assert r["model"]["shape"]["L"] == 3060
    seq = next(r for r in rows if r["kernel"] == "bidirectional_scan")
    assert seq["config"]["picked_at"]["B"] == 16 and seq["config"]["variant"] == "sequential"
    assert [lp["role"] for lp in seq["loops"]] == ["walk_first_half", "walk_second_half"]
    # Issue 14's static targets for the configuration the engine launches at B=16 (bf16 activations,
    # float32 B/C from the wrapper): <= 8 lane instructions per (element, state), no spills, <= 0.35 ms.
    assert seq["instr_per_elem_state"] <= 8.0 and seq["spills"] == 0 and seq["modeled_ms"] <= 0.35, seq
    for r in rows:
        # one lane per (channel, direction) with its N states in registers: no shuffles, no barriers
        for lp in r["loops"]:
            assert lp["shfl"] == 0 and lp["bar"] == 0, (r["kernel"], lp)
    chunk_out = next(r for r in rows if r["kernel"] == "bidirectional_scan_chunk_out")
    assert [lp["role"] for lp in chunk_out["loops"]] == ["carry_fold", "walk_first_half", "walk_second_half"]
