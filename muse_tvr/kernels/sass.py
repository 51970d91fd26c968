"""Static performance report of the project's Triton kernels from their sm_90 machine code (no GPU needed).

`python -m muse_tvr.kernels.aot --sass sm_90 --json` (aot.py's command line calls `main` here) compiles every
kernel configuration the engine can launch (the AOT specs; for the scan, the configurations
`default_block_d` / `choose_variant` pick at B=16 and B=1 for L=3060, D=512, N=16) and prints one JSON
object per kernel and configuration. docs/kernels.md "Static report" writes the method and the model down;
in short:

- registers, spills: `cuobjdump --dump-resource-usage` of the cubin Triton produced (REG, LOCAL) and the
  `ptxas -v` log of the same PTX recompiled with Triton's own ptxas flags (spill stores / loads);
- loops: `nvdisasm -c` of the cubin; a loop is a backward branch (branch address >= target address,
  the `BRA self` trap after EXIT excluded) and spans [target, branch]; innermost loops contain no other
  loop. Its instruction count is the static count of SASS instructions in that span (every warp
  instruction issued on one trip when the body has no forward branch; `forward_branches` says when not);
- per (element, state): lane instructions per trip / (element, state) pairs one trip advances, i.e.
  instructions x 32 x num_warps / (BLOCK_D x N x directions x steps per trip);
- modeled time: max(issue, MUFU, HBM) on an H200 (`H200`), per `model_time`.

The Triton kernel `_calibration_kernel` (AOT_SPECS here, not an engine kernel: aot.KERNEL_MODULES does not
list this module) has a count known by hand; tests/test_sass.py checks the counter on it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import triton
import triton.language as tl

from . import aot, triton_interpreting

# Throughput model of one H200 (SXM, sm_90): 132 SMs at the 1.98 GHz boost clock; each SM has 4 schedulers
# issuing 1 warp instruction per clock each, and MUFU (ex2/lg2/rcp/...) throughput of 16 lanes per clock.
H200 = {"name": "H200", "sms": 132, "clock_hz": 1.98e9, "schedulers_per_sm": 4,
        "mufu_lanes_per_sm_clk": 16, "hbm_bytes_per_s": 4.8e12}

# The MUSE shape the report models (docs/kernels.md): batch 16 at L=3060 tokens, D=512 channels, N=16 states.
SHAPE = {"B": 16, "L": 3060, "D": 512, "N": 16}
SMALL_BATCH = 1

_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


class SassToolMissing(RuntimeError):
    """Triton's bundled CUDA binary tool (nvdisasm, cuobjdump, ptxas) is not there."""


def tool_path(name: str) -> str:
    """Path of a CUDA binary tool shipped with Triton (triton/backends/nvidia/bin/`name`)."""
    base = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    path = os.path.join(base, name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise SassToolMissing(f"{name} not found at {path}: the static SASS report needs the nvdisasm, "
                              f"cuobjdump and ptxas that Triton {triton.__version__} ships under {base}")
    return path


def _run_on_file(args_before: list[str], data: bytes | str, suffix: str, args_after: list[str] = ()) -> str:
    mode = "wb" if isinstance(data, bytes) else "w"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k" + suffix)
        with open(path, mode) as f:
            f.write(data)
        proc = subprocess.run([*args_before, path, *args_after], capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        raise RuntimeError(f"{os.path.basename(args_before[0])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------------
# Disassembly and loops


@dataclass
class Instr:
    addr: int
    pred: str      # "" or e.g. "@!P0"
    opcode: str    # with modifiers, e.g. "MUFU.EX2"
    text: str      # the whole instruction
    target: str | None = None  # label of a branch target
    line: str | None = None    # "file.py:N" from the line info (nvdisasm -g), innermost location

    @property
    def op(self) -> str:
        """The opcode without modifiers (MUFU.EX2 -> MUFU)."""
        return self.opcode.split(".")[0]


_INSTR = re.compile(r"/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH_OPS = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "BSSY", "BSYNC", "WARPSYNC"}


def disassemble(cubin: bytes) -> tuple[list[Instr], dict[str, int]]:
    """(instructions in address order, {label: address}) of every kernel in `cubin` (nvdisasm -c -g:
    Triton compiles with -lineinfo, so each instruction also gets its source line)."""
    out = _run_on_file([tool_path("nvdisasm"), "-c", "-g"], cubin, ".cubin")
    return parse_sass(out)


def parse_sass(text: str) -> tuple[list[Instr], dict[str, int]]:
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    src = None
    for line in text.splitlines():
        fm = re.search(r'//## File "([^"]+)", line (\d+)', line)
        if fm:
            src = f"{os.path.basename(fm.group(1))}:{fm.group(2)}"
            continue
        lm = _LABEL.match(line)
        if lm:
            pending.append(lm.group(1))
            continue
        m = _INSTR.search(line)
        if not m:
            continue
        addr, body = int(m.group(1), 16), m.group(2).strip()
        pred = ""
        if body.startswith("@"):
            pred, body = body.split(None, 1)
        opcode = body.split(None, 1)[0]
        tm = re.search(r"`\((\.L_x_\d+)\)", body)
        instrs.append(Instr(addr, pred, opcode, m.group(2).strip(), tm.group(1) if tm else None, src))
        for lab in pending:
            labels[lab] = addr
        pending = []
    end = instrs[-1].addr + 16 if instrs else 0
    for lab in pending:
        labels[lab] = end
    return instrs, labels


@dataclass
class Loop:
    start: int            # address of the first instruction (the branch target)
    end: int              # address of the backward branch
    instructions: int     # SASS instructions in [start, end]
    mufu: dict[str, int]  # MUFU.<kind> -> count
    ops: dict[str, int]   # opcode (no modifiers) -> count
    forward_branches: int  # branches inside the span that jump forward (skipped code may be counted)
    innermost: bool = True
    lines: dict[str, int] = field(default_factory=dict)  # source line -> instructions, largest first

    @property
    def mufu_total(self) -> int:
        return sum(self.mufu.values())


def find_loops(instrs: list[Instr], labels: dict[str, int]) -> list[Loop]:
    """Every backward-branch loop, in address order, innermost ones flagged."""
    spans = []
    for ins in instrs:
        if ins.op in ("BRA", "JMP") and ins.target in labels:
            tgt = labels[ins.target]
            if tgt < ins.addr:  # tgt == addr: the `BRA self` trap after EXIT, not a loop
                spans.append((tgt, ins.addr))
    loops = []
    for s, e in sorted(set(spans)):
        body = [i for i in instrs if s <= i.addr <= e]
        ops: dict[str, int] = {}
        mufu: dict[str, int] = {}
        fwd = 0
        for i in body:
            ops[i.op] = ops.get(i.op, 0) + 1
            if i.op == "MUFU":
                mufu[i.opcode] = mufu.get(i.opcode, 0) + 1
            if i.op in ("BRA", "JMP") and i.target in labels and labels[i.target] > i.addr:
                fwd += 1
        inner = not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in spans)
        by_line: dict[str, int] = {}
        for i in body:
            by_line[i.line or "?"] = by_line.get(i.line or "?", 0) + 1
        lines = dict(sorted(by_line.items(), key=lambda kv: -kv[1]))
        loops.append(Loop(s, e, len(body), mufu, ops, fwd, inner, lines))
    return loops


def innermost_loops(loops: list[Loop]) -> list[Loop]:
    return [lp for lp in loops if lp.innermost]


# ----------------------------------------------------------------------------------------------------
# Resource usage


def resource_usage(cubin: bytes) -> dict[str, int]:
    """cuobjdump --dump-resource-usage of the (single-kernel) cubin: REG, STACK, SHARED, LOCAL, ..."""
    out = _run_on_file([tool_path("cuobjdump"), "--dump-resource-usage"], cubin, ".cubin")
    m = re.search(r"Function [^:\n]+:\s*\n\s*(.*)", out)
    if not m:
        raise RuntimeError(f"cuobjdump printed no function resource usage:\n{out[-1000:]}")
    return {k: int(v) for k, v in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", m.group(1))}


def ptxas_verbose(ptx: str, metadata: dict[str, Any] | None = None) -> dict[str, int]:
    """Registers, spill stores / loads (bytes) and stack frame from `ptxas -v` on the PTX, run with the
    flags Triton's NVIDIA backend uses for the cubin (-lineinfo, --regAllocOptLevel=2, --gpu-name)."""
    md = metadata or {}
    target = aot._ptx_line(ptx, ".target").split(",")[0].strip()
    flags = ["-lineinfo"]
    if md.get("enable_fp_fusion") is False:
        flags.append("--fmad=false")
    flags += ["-v", "--regAllocOptLevel=2"]
    extra = md.get("ptx_options")
    if extra and extra != "None":
        flags += str(extra).split(" ")
    flags.append(f"--gpu-name={target}")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([tool_path("ptxas"), *flags, src, "-o", os.path.join(tmp, "k.o")],
                              capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed ({proc.returncode}): {log[-2000:]}")
    info: dict[str, int] = {}
    for key, pat in (("registers", r"Used (\d+) registers"), ("spill_stores", r"(\d+) bytes spill stores"),
                     ("spill_loads", r"(\d+) bytes spill loads"), ("stack_frame", r"(\d+) bytes stack frame")):
        m = re.search(pat, log)
        if m:
            info[key] = int(m.group(1))
    return info


# ----------------------------------------------------------------------------------------------------
# Throughput model


def model_time(warps: int, instr_per_warp: float, mufu_per_warp: float, hbm_bytes: float,
               gpu: dict[str, Any] = H200) -> dict[str, float]:
    """max(issue, MUFU, HBM) in ms for a grid of `warps` identical warps, each issuing `instr_per_warp`
    warp instructions (of which `mufu_per_warp` MUFU), moving `hbm_bytes` in all.

    issue = ceil(warps / (SMs x schedulers)) x instr_per_warp / clock  (1 warp instruction per scheduler
            per clock; the ceil is the tail when the warps do not divide evenly; one warp per scheduler
            already needs every cycle issued, which is the optimistic part);
    MUFU  = ceil(warps / (SMs x schedulers)) x mufu_per_warp x 32 / (MUFU lanes per SM per clock / schedulers)
            / clock;
    HBM   = hbm_bytes / HBM bandwidth."""
    per_sched = math.ceil(warps / (gpu["sms"] * gpu["schedulers_per_sm"]))
    issue_s = per_sched * instr_per_warp / gpu["clock_hz"]
    lanes = gpu["mufu_lanes_per_sm_clk"] / gpu["schedulers_per_sm"]
    mufu_s = per_sched * mufu_per_warp * 32 / lanes / gpu["clock_hz"]
    hbm_s = hbm_bytes / gpu["hbm_bytes_per_s"]
    parts = {"issue_ms": issue_s * 1e3, "mufu_ms": mufu_s * 1e3, "hbm_ms": hbm_s * 1e3}
    bound = max(parts, key=parts.get)
    return {**{k: round(v, 4) for k, v in parts.items()}, "modeled_ms": round(max(parts.values()), 4),
            "bound": bound[:-3], "warps": warps, "warps_per_scheduler": per_sched,
            "instr_per_warp": round(instr_per_warp), "hbm_bytes": int(hbm_bytes)}


# ----------------------------------------------------------------------------------------------------
# The report


@dataclass
class TimeLoop:
    """How a loop of the source maps onto the innermost SASS loops (address order)."""
    role: str          # e.g. "walk_first_half"
    elem_state: int    # (element, state) pairs one step advances: BLOCK_D x N x directions
    trips: int         # source-loop steps the busiest warp walks at the modeled shape (SASS trips x steps)
    scan: bool = True  # counted in instr_per_elem_state (carry folds are not the scan's steady state)
    steps: int = 1     # source-loop steps one SASS trip covers (> 1 when ptxas/LLVM unrolled the loop)


@dataclass
class Entry:
    kernel: str
    module: str
    spec: str
    kwargs: dict[str, Any]
    config: dict[str, Any]
    time_loops: list[TimeLoop] | None = None  # None: a kernel without a modeled time loop
    warps: int | None = None                  # warps in the grid at the modeled shape
    hbm_bytes: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def scan_entries(dtypes: tuple[str, ...] = ("bf16",), shape: dict[str, int] = SHAPE,
                 sm_count: int = H200["sms"]) -> list[Entry]:
    """The scan configurations the engine launches at B=shape["B"] and at B=1 (same L, D, N): the wrapper
    hands the kernels float32 B/C with C after B in each row (`triton_scan.prepare_inputs`), so that is
    what is compiled; 16-bit activations pay a (B, L, 2N) conversion pass, counted in the HBM bytes."""
    from .selective_scan import triton_scan as ts

    L, D, N = shape["L"], shape["D"], shape["N"]
    bd = ts.default_block_d(D, interpret=False)
    nw = ts.num_warps_for(bd)
    nch_tile, ch = ts.tile_n(N)
    entries = []
    for batch in dict.fromkeys((shape["B"], SMALL_BATCH)):
        variant, chunk = ts.choose_variant(batch, D, L, bd, sm_count)
        n_dblk = triton.cdiv(D, bd)
        for dtype in dtypes:
            e = _DTYPE_BYTES[dtype]
            bld, bln = batch * L * D, batch * L * N
            # B and C of both directions read as float32; the conversion reads the 16-bit ones and writes those.
            bc_bytes = 4 * bln * 4 + (4 * bln * (e + 4) if e != 4 else 0)
            base = {"dtype": dtype, "bc_dtype": "fp32", "N": N, "BLOCK_D": bd, "NCH": nch_tile, "CH": ch,
                    "num_warps": nw, "variant": variant, "picked_at": {"B": batch, "L": L, "D": D, "N": N}}
            kw = {"dtype": dtype, "d_state": N, "block_d": bd, "bc_dtype": "fp32", "even_d": D % bd == 0,
                  "packed_bc": True}
            es = bd * N * 2
            if variant == "sequential":
                entries.append(Entry(
                    "bidirectional_scan", ts.__name__, "bidirectional_scan", kw, base,
                    [TimeLoop("walk_first_half", es, L // 2, steps=2),
                     TimeLoop("walk_second_half", es, L - L // 2, steps=2)],
                    warps=batch * n_dblk * nw,
                    # u, dt (both directions) and z read once; out written twice, read once; B, C per direction
                    hbm_bytes=(5 + 3) * bld * e + bc_bytes))
                continue
            nch = triton.cdiv(L, chunk)
            cfg = {**base, "chunk": chunk, "n_chunks": nch}
            hend = batch * nch * 2 * D * N * 4 + batch * nch * 2 * D * 4
            entries.append(Entry(
                "bidirectional_scan_chunk_state", ts.__name__, "bidirectional_scan_chunk_state", kw, cfg,
                [TimeLoop("walk", es, chunk, steps=2)], warps=batch * n_dblk * nch * nw,
                hbm_bytes=4 * bld * e + 2 * bln * 4 + hend))
            # The busiest chunk-out program folds max(pid_c, nch - 1 - pid_c) <= nch - 1 carries.
            entries.append(Entry(
                "bidirectional_scan_chunk_out", ts.__name__, "bidirectional_scan_chunk_out", kw, cfg,
                [TimeLoop("carry_fold", es, nch - 1, scan=False),
                 TimeLoop("walk_first_half", es, chunk // 2, steps=2),
                 TimeLoop("walk_second_half", es, chunk - chunk // 2, steps=2)],
                warps=batch * n_dblk * nch * nw,
                hbm_bytes=(5 + 3) * bld * e + bc_bytes + hend * (nch - 1) / 2))
    return entries


def other_entries(skip_modules: tuple[str, ...] = ("muse_tvr.kernels.selective_scan.triton_scan",)) -> list[Entry]:
    """Every other AOT spec with its default arguments (no time model)."""
    specs, _ = aot.project_aot_specs()
    out = []
    for name, (mod, factory) in sorted(specs.items()):
        if mod in skip_modules:
            continue
        spec = factory()
        cfg = {k: v for k, v in spec.get("constexprs", {}).items()}
        cfg.update(spec.get("options", {}))
        # A module may describe a spec's time loops for the model (SASS_MODELS: name -> f(shape) -> dict
        # with "time_loops" [(role, elem_state, trips)], "warps", "hbm_bytes").
        model = getattr(importlib.import_module(mod), "SASS_MODELS", {}).get(name)
        if model is None:
            out.append(Entry(name, mod, name, {}, cfg))
            continue
        m = model(SHAPE)
        out.append(Entry(name, mod, name, {}, {**cfg, "picked_at": dict(SHAPE)},
                         [TimeLoop(*t) for t in m["time_loops"]], warps=m["warps"], hbm_bytes=m["hbm_bytes"]))
    return out


def _compile(entries: list[Entry], arch: int) -> list[aot.AotKernel | str]:
    reqs = [aot.AotRequest(e.module, e.spec, arch, tuple(sorted(e.kwargs.items()))) for e in entries]
    if triton_interpreting():
        res = aot.compile_isolated(reqs)
        return [res[r] for r in reqs]
    out: list[aot.AotKernel | str] = []
    for r in reqs:
        try:
            out.append(aot._compile_request(r))
        except Exception as ex:  # one broken kernel must not hide the others
            out.append(f"{type(ex).__name__}: {ex}")
    return out


def analyze(entry: Entry, k: aot.AotKernel) -> dict[str, Any]:
    """The report row of one compiled kernel."""
    ru = resource_usage(k.cubin)
    pv = ptxas_verbose(k.ptx, k.metadata)
    instrs, labels = disassemble(k.cubin)
    inner = innermost_loops(find_loops(instrs, labels))
    row: dict[str, Any] = {
        "kernel": entry.kernel, "config": entry.config, "entry": k.name,
        "registers": ru.get("REG"), "spills": pv.get("spill_stores", 0) + pv.get("spill_loads", 0),
        "spill_stores_bytes": pv.get("spill_stores"), "spill_loads_bytes": pv.get("spill_loads"),
        "local_bytes": ru.get("LOCAL"), "shared_bytes": k.shared, "cubin_shared_bytes": ru.get("SHARED"),
        "sass_instructions": len(instrs),
        "loops": [{"start": hex(lp.start), "end": hex(lp.end), "instructions": lp.instructions,
                   "mufu": lp.mufu, "forward_branches": lp.forward_branches,
                   "bar": lp.ops.get("BAR", 0), "ldg": lp.ops.get("LDG", 0), "stg": lp.ops.get("STG", 0),
                   "shfl": lp.ops.get("SHFL", 0), "top_source_lines": dict(list(lp.lines.items())[:8])}
                  for lp in inner],
        "loop_instructions": None, "instr_per_elem_state": None, "mufu_per_elem_state": None,
        "modeled_ms": None, "model": None,
    }
    if pv.get("registers") not in (None, ru.get("REG")):
        row["warning"] = f"ptxas -v rerun used {pv.get('registers')} registers, the cubin {ru.get('REG')}"
    if entry.time_loops is None:
        if inner:
            row["loop_instructions"] = max(lp.instructions for lp in inner)
        return row
    if len(inner) != len(entry.time_loops):
        # A ptxas/LLVM unroll leaves a remainder loop; the mapping onto the source loops would be a guess.
        row["error"] = (f"expected {len(entry.time_loops)} innermost loops "
                        f"({', '.join(t.role for t in entry.time_loops)}), found {len(inner)}")
        return row
    nw = int(entry.config.get("num_warps", k.num_warps))
    for lp, tloop, out in zip(inner, entry.time_loops, row["loops"]):
        out["role"] = tloop.role
        out["trips"] = tloop.trips
        out["steps_per_trip"] = tloop.steps
        out["instr_per_elem_state"] = round(lp.instructions * 32 * nw / (tloop.elem_state * tloop.steps), 3)
        out["mufu_per_elem_state"] = round(lp.mufu_total * 32 * nw / (tloop.elem_state * tloop.steps), 3)
    # Weighted by SASS trips (trips / steps): the loop_instructions of a kernel with two walk loops (the
    # scan's halves) is their mean per trip; per (element, state) divides by the pairs all those trips advance.
    scan = [(lp, t) for lp, t in zip(inner, entry.time_loops) if t.scan]
    sass_trips = sum(t.trips / t.steps for _, t in scan)
    pairs = sum(t.trips * t.elem_state for _, t in scan)
    row["loop_instructions"] = round(sum(lp.instructions * t.trips / t.steps for lp, t in scan) / sass_trips, 1)
    row["instr_per_elem_state"] = round(
        sum(lp.instructions * t.trips / t.steps for lp, t in scan) * 32 * nw / pairs, 3)
    row["mufu_per_elem_state"] = round(sum(lp.mufu_total * t.trips / t.steps for lp, t in scan) * 32 * nw / pairs, 3)
    instr = sum(lp.instructions * t.trips / t.steps for lp, t in zip(inner, entry.time_loops))
    mufu = sum(lp.mufu_total * t.trips / t.steps for lp, t in zip(inner, entry.time_loops))
    model = model_time(entry.warps * nw, instr, mufu, entry.hbm_bytes)
    model["shape"] = entry.config.get("picked_at")
    model["gpu"] = H200["name"]
    row["modeled_ms"] = model["modeled_ms"]
    row["model"] = model
    return row


def report(arch: int = 90, dtypes: tuple[str, ...] = ("bf16",), include_others: bool = True) -> list[dict[str, Any]]:
    """The static report: one row per kernel configuration (see the module docstring)."""
    for tool in ("nvdisasm", "cuobjdump", "ptxas"):
        tool_path(tool)
    entries = scan_entries(dtypes) + (other_entries() if include_others else [])
    rows = []
    for entry, k in zip(entries, _compile(entries, arch)):
        if isinstance(k, str):
            rows.append({"kernel": entry.kernel, "config": entry.config, "error": k})
            continue
        try:
            rows.append(analyze(entry, k))
        except Exception as ex:
            rows.append({"kernel": entry.kernel, "config": entry.config, "error": f"{type(ex).__name__}: {ex}"})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'kernel':34} {'config':28} {'regs':>4} {'spill':>5} {'loop':>7} {'i/es':>7} {'mufu/es':>7} {'ms':>8}"]
    for r in rows:
        c = r.get("config", {})
        cfg = ",".join(str(c[k]) for k in ("dtype", "BLOCK_D", "variant", "chunk") if k in c)
        if "error" in r:
            lines.append(f"{r['kernel']:34} {cfg:28} error: {r['error']}")
            continue
        f = lambda v, w: f"{'-' if v is None else v:>{w}}"  # noqa: E731
        lines.append(f"{r['kernel']:34} {cfg:28} {f(r['registers'], 4)} {f(r['spills'], 5)} "
                     f"{f(r['loop_instructions'], 7)} {f(r['instr_per_elem_state'], 7)} "
                     f"{f(r['mufu_per_elem_state'], 7)} {f(r['modeled_ms'], 8)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m muse_tvr.kernels.aot",
                                description="Static SASS report of the project's Triton kernels (CPU only).")
    p.add_argument("--sass", required=True, metavar="sm_XX", help="target, e.g. sm_90")
    p.add_argument("--json", action="store_true", help="print the JSON list (default: a table)")
    p.add_argument("--dtype", default="bf16", help="scan I/O dtypes, comma-separated, or 'all' (default bf16)")
    p.add_argument("--scan-only", action="store_true", help="leave out the conv and pyramid kernels")
    a = p.parse_args(argv)
    m = re.fullmatch(r"sm_?(\d+)a?", a.sass)
    if not m:
        p.error(f"--sass wants sm_XX, got {a.sass!r}")
    dtypes = tuple(_DTYPE_BYTES) if a.dtype == "all" else tuple(a.dtype.split(","))
    for d in dtypes:
        if d not in _DTYPE_BYTES:
            p.error(f"unknown dtype {d!r}; choose from {sorted(_DTYPE_BYTES)} or 'all'")
    try:
        rows = report(int(m.group(1)), dtypes, include_others=not a.scan_only)
    except SassToolMissing as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=1) if a.json else _table(rows))
    return 0


# ----------------------------------------------------------------------------------------------------
# Calibration kernel (count known by hand; tests/test_sass.py)


@triton.jit
def _calibration_kernel(x_ptr, T, a, c, y_ptr, BLOCK: tl.constexpr, FMAS: tl.constexpr):
    """One element per lane (BLOCK = 32 x num_warps); each of T steps does one ex2.approx.ftz (1 MUFU.EX2)
    and FMAS dependent FMAs acc * a + c (FMAS FFMA)."""
    offs = tl.arange(0, BLOCK)
    acc = tl.load(x_ptr + offs)
    for _ in range(T):
        acc = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [acc], dtype=tl.float32,
                                        is_pure=True, pack=1)
        for _k in tl.static_range(FMAS):
            acc = acc * a + c
    tl.store(y_ptr + offs, acc)


def calibration_spec(fmas: int = 4, block: int = 32) -> dict:
    return {"fn": _calibration_kernel,
            "signature": {"x_ptr": "*fp32", "T": "i32", "a": "fp32", "c": "fp32", "y_ptr": "*fp32",
                          "BLOCK": "constexpr", "FMAS": "constexpr"},
            "constexprs": {"BLOCK": block, "FMAS": fmas}, "grid": "(1,)",
            "options": {"num_warps": max(1, block // 32)}}


# Only the calibration kernel (so aot.compile_isolated can compile it); not an engine kernel.
AOT_SPECS = {"sass_calibration": calibration_spec}
