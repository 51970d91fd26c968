"""Ahead-of-time compilation of the project's Triton kernels to PTX/cubin, on any machine (no GPU needed).

Why: TensorRT's AOT plugins (docs/tensorrt.md) bake a Triton kernel's PTX into the engine plan; the
plan then needs a kernel whose ABI is known (its parameter list), that needs no global scratch (TensorRT
passes null for the two scratch pointers Triton >= 3.5 appends), whose shared memory fits the target,
and whose PTX ISA version the deployment driver accepts. This module compiles a kernel for a
`GPUTarget` with `triton.compile(ASTSource(...))` and reports exactly those facts.

Spec format (shared with the kernel modules, each of which exports `AOT_SPECS`, a dict
name -> function(dtype="bf16", ...) returning one spec):

    {"fn": <@triton.jit kernel>, "signature": {param: "*fp32" | "i32" | ... | "constexpr"},
     "constexprs": {param: value}, "grid": "<human description>", "options": {"num_warps": 4, ...}}

Interpreter mode: a process with TRITON_INTERPRET=1 (the test run) cannot compile. Its kernels are
interpreter objects, and the interpreter patches `triton.language` in place while kernels run (calls to
@triton.jit helpers and to `tl.sum`-style library functions are never unpatched), which breaks code
generation for the rest of the process. `compile_isolated` therefore compiles in a fresh Python process
without TRITON_INTERPRET and returns the results; `compile_kernel` is for processes that do not interpret.

Command line: `python -m muse_tvr.kernels.aot < requests.json` (no arguments: what `compile_isolated`
runs); `python -m muse_tvr.kernels.aot --sass sm_90 [--json]`: the static SASS performance report
(muse_tvr.kernels.sass, docs/kernels.md "Static report").
"""
from __future__ import annotations

import base64
import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from . import triton_interpreting

# Largest dynamic shared memory one block may use (opt-in maximum), per compute capability, bytes.
MAX_SHARED_MEMORY = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}

# Lowest PTX ISA version (x10, as Triton's integer option) that can target each compute capability
# (sm_90a needs 8.0, sm_89 7.8, ...); asking LLVM for less aborts the whole process, so it is checked
# before compiling. The TensorRT plugins check a deployment driver's PTX cap against it too.
MIN_PTX_VERSION = {80: 70, 86: 71, 87: 74, 89: 78, 90: 80, 100: 86, 103: 88, 120: 87}

# The kernel modules that define AOT_SPECS. The AOT test walks all of them.
KERNEL_MODULES = (
    "muse_tvr.kernels.pyramid.triton_pyramid",
    "muse_tvr.kernels.selective_scan.triton_scan",
    "muse_tvr.kernels.causal_conv.triton_conv",
)


@dataclass
class AotKernel:
    """What one AOT compile produced, and the facts a TensorRT AOT plugin depends on."""
    name: str                    # the PTX entry name (what a plugin launches)
    arch: int                    # compute capability, e.g. 90
    ptx: str
    cubin: bytes
    ptx_version: tuple[int, int]  # the `.version` line of the PTX
    ptx_target: str              # the `.target` line, e.g. "sm_90a"
    params: list[str]            # PTX parameter declarations, in order
    n_args: int                  # the kernel's non-constexpr arguments
    shared: int                  # bytes of shared memory per block
    global_scratch_size: int     # bytes of global scratch the kernel needs (must be 0 for TensorRT)
    profile_scratch_size: int
    num_warps: int
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)
    compile_s: float = 0.0       # wall time of the compile

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cubin"] = base64.b64encode(self.cubin).decode("ascii")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AotKernel":
        d = dict(d)
        d["cubin"] = base64.b64decode(d["cubin"])
        d["ptx_version"] = tuple(d["ptx_version"])
        return cls(**d)

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def n_appended(self) -> int:
        """Parameters Triton added after the kernel's own (the scratch pointers in Triton >= 3.5)."""
        return self.n_params - self.n_args


def compile_kernel(fn: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any] | None = None,
                   arch: int = 90, ptx_version: int | None = None,
                   options: Mapping[str, Any] | None = None) -> AotKernel:
    """Compile a @triton.jit kernel for NVIDIA compute capability `arch` in this process.

    signature: every parameter of the kernel in order, with its Triton type ("*fp16", "i32", ...) or
      "constexpr"; constexprs: the values of the constexpr parameters.
    ptx_version: cap the PTX ISA version, as an integer like Triton's option (78 = PTX 7.8); None keeps
      Triton's default (the newest its bundled ptxas supports).
    options: other compile options, e.g. {"num_warps": 8, "num_stages": 2}.
    Not usable under TRITON_INTERPRET=1 (see the module docstring): use `compile_isolated` there.
    """
    if triton_interpreting():
        raise RuntimeError("cannot compile Triton kernels in a process with TRITON_INTERPRET=1; "
                           "use muse_tvr.kernels.aot.compile_isolated")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    opts = dict(options or {})
    if ptx_version is not None:
        check_ptx_cap(arch, ptx_version)
        opts["ptx_version"] = int(ptx_version)
    src = ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs or {}))
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
    md = compiled.metadata
    meta = md._asdict() if hasattr(md, "_asdict") else dict(vars(md))
    meta = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in meta.items()}
    ptx = compiled.asm["ptx"]
    name = meta.get("name", compiled.name)
    return AotKernel(
        name=name, arch=arch, ptx=ptx, cubin=compiled.asm.get("cubin", b""),
        ptx_version=ptx_isa_version(ptx), ptx_target=_ptx_line(ptx, ".target"),
        params=ptx_params(ptx, name), n_args=sum(1 for t in signature.values() if t != "constexpr"),
        shared=int(meta.get("shared", 0)), global_scratch_size=int(meta.get("global_scratch_size", 0)),
        profile_scratch_size=int(meta.get("profile_scratch_size", 0)),
        num_warps=int(meta.get("num_warps", opts.get("num_warps", 4))), metadata=meta)


def compile_spec(spec: Mapping[str, Any], arch: int = 90, ptx_version: int | None = None) -> AotKernel:
    """`compile_kernel` for one AOT_SPECS entry ({"fn", "signature", "constexprs", "options"})."""
    return compile_kernel(spec["fn"], spec["signature"], spec.get("constexprs"), arch=arch,
                          ptx_version=ptx_version, options=spec.get("options"))


def check_ptx_cap(arch: int, ptx_version: int) -> None:
    """Raise ValueError if PTX ISA `ptx_version` (78 = 7.8) cannot express code for sm_`arch`."""
    need = MIN_PTX_VERSION.get(arch)
    if need is not None and int(ptx_version) < need:
        raise ValueError(f"PTX ISA {ptx_version // 10}.{ptx_version % 10} cannot target sm_{arch}; "
                         f"it needs at least {need // 10}.{need % 10}")


@dataclass(frozen=True)
class AotRequest:
    """One kernel to compile: AOT_SPECS[`spec`] of `module`, called with `kwargs`, for sm_`arch`."""
    module: str
    spec: str
    arch: int = 90
    kwargs: tuple[tuple[str, Any], ...] = ()
    ptx_version: int | None = None

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.kwargs)
        cap = f",ptx<={self.ptx_version}" if self.ptx_version else ""
        return f"{self.spec}[{args}]@sm_{self.arch}{cap}"


def _compile_request(req: AotRequest) -> AotKernel:
    mod = importlib.import_module(req.module)
    factory = getattr(mod, "AOT_SPECS")[req.spec]
    return compile_spec(factory(**dict(req.kwargs)), arch=req.arch, ptx_version=req.ptx_version)


def compile_isolated(requests: Iterable[AotRequest], timeout: float = 600.0) -> dict[AotRequest, AotKernel | str]:
    """Compile each request in one fresh Python process without TRITON_INTERPRET.

    Returns {request: AotKernel, or the error message if that kernel failed to compile}. Raises
    RuntimeError if the child process itself fails (with its stderr).
    """
    reqs = list(requests)
    for r in reqs:
        if r.ptx_version is not None:
            check_ptx_cap(r.arch, r.ptx_version)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    payload = json.dumps([asdict(r) for r in reqs])
    proc = subprocess.run([sys.executable, "-m", "muse_tvr.kernels.aot"], input=payload, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"AOT compile process failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    answers = json.loads(proc.stdout)
    out: dict[AotRequest, AotKernel | str] = {}
    for req, ans in zip(reqs, answers):
        out[req] = ans["error"] if "error" in ans else AotKernel.from_json(ans["kernel"])
    return out


def _serve() -> None:
    results = []
    for raw in json.load(sys.stdin):
        raw["kwargs"] = tuple(tuple(kv) for kv in raw.get("kwargs", ()))
        req = AotRequest(**raw)
        try:
            t0 = time.perf_counter()
            kernel = _compile_request(req)
            kernel.compile_s = time.perf_counter() - t0
            results.append({"kernel": kernel.to_json()})
        except Exception as e:  # one broken kernel must not hide the others' results
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout)


def ptx_isa_version(ptx: str) -> tuple[int, int]:
    line = _ptx_line(ptx, ".version")
    m = re.fullmatch(r"(\d+)\.(\d+)", line)
    if not m:
        raise ValueError(f"PTX has no parsable .version line (got {line!r})")
    return int(m.group(1)), int(m.group(2))


def _ptx_line(ptx: str, directive: str) -> str:
    for line in ptx.splitlines():
        line = line.strip()
        if line.startswith(directive + " "):
            return line[len(directive):].strip()
    return ""


def ptx_params(ptx: str, entry: str) -> list[str]:
    """The `.param` declarations of the `.entry` named `entry`, in order."""
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*\((.*?)\)", ptx, re.S)
    if not m:
        raise ValueError(f"PTX has no .entry {entry}")
    return [p.strip() for p in m.group(1).split(",") if ".param" in p]


def aot_problems(k: AotKernel, max_ptx_version: tuple[int, int] | None = None,
                 expected_appended: int | None = None) -> list[str]:
    """Everything that would stop this kernel from being baked into a TensorRT plan (empty = fine)."""
    problems = []
    if k.global_scratch_size != 0:
        problems.append(f"{k.name}: needs {k.global_scratch_size} B of global scratch (TensorRT passes null)")
    if k.profile_scratch_size != 0:
        problems.append(f"{k.name}: needs {k.profile_scratch_size} B of profile scratch")
    limit = MAX_SHARED_MEMORY.get(k.arch)
    if limit is not None and k.shared > limit:
        problems.append(f"{k.name}: {k.shared} B shared memory exceeds sm_{k.arch}'s {limit} B")
    if max_ptx_version is not None and k.ptx_version > tuple(max_ptx_version):
        problems.append(f"{k.name}: PTX ISA {k.ptx_version} above the cap {tuple(max_ptx_version)}")
    if not k.ptx_target.startswith(f"sm_{k.arch}"):
        problems.append(f"{k.name}: PTX .target {k.ptx_target!r} is not sm_{k.arch}")
    if expected_appended is not None and k.n_appended != expected_appended:
        problems.append(f"{k.name}: {k.n_params} PTX params for {k.n_args} kernel args "
                        f"(expected {expected_appended} appended by Triton)")
    return problems


def appended_params_for_this_triton() -> int:
    """Scratch pointers Triton appends to every kernel: 2 (global + profile) since Triton 3.5."""
    import triton

    major, minor = (int(x) for x in triton.__version__.split(".")[:2])
    return 2 if (major, minor) >= (3, 5) else 0


def project_aot_specs() -> tuple[dict[str, tuple[str, Any]], dict[str, str]]:
    """Every AOT_SPECS entry of the project's kernel modules.

    Returns ({spec name: (module, spec factory)}, {module: why it contributes nothing}).
    """
    specs: dict[str, tuple[str, Any]] = {}
    absent: dict[str, str] = {}
    for mod_name in KERNEL_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            absent[mod_name] = f"not importable: {e}"
            continue
        table = getattr(mod, "AOT_SPECS", None)
        if not table:
            absent[mod_name] = "defines no AOT_SPECS"
            continue
        for name, factory in table.items():
            specs[name] = (mod_name, factory)
    return specs, absent


def main(argv: list[str] | None = None) -> int:
    """No arguments: serve compile requests on stdin (compile_isolated). Otherwise the SASS report."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        _serve()
        return 0
    from . import sass

    return sass.main(argv)


if __name__ == "__main__":
    sys.exit(main())
