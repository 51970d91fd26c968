"""TensorRT plugins for the custom ops of `contracts.py`, built on TensorRT's quickly-deployable plugin API.

Every plugin is derived from its op contract: the plugin id is `<PLUGIN_NAMESPACE>::<op_type>` (TensorRT's
ONNX parser maps a node to a plugin by op_type and the node's `plugin_namespace` attribute; the domain is
ignored), its tensor inputs are the contract's inputs in order, its attributes are the contract's
op-specific attributes with TensorRT-serialisable Python types, its outputs are the contract's outputs.
The three attributes the parser itself reads (`contracts.PLUGIN_ATTRIBUTES`) are NOT plugin fields: the
parser only forwards node attributes whose names the plugin creator lists.

Implementations
- `muse::BiSelectiveScan`: an AOT implementation (`tensorrt.plugin.aot_impl`, TensorRT >= 10.9) that
  compiles the project's one-launch Triton scan (`kernels/selective_scan/triton_scan.py`,
  `_biscan_seq_kernel`) to PTX for the build GPU, with the PTX ISA version capped for the deployment
  driver. TensorRT bakes that PTX into the plan, so the plan runs in a plain C++ TensorRT runtime (or
  `trtexec --loadEngine`) with no Python and no plugin library. Kernel ABI as TensorRT calls it: the
  plugin's input pointers (contract order), then int32 scalars (`SymInt32` expressions of the input
  shapes), then the output pointers; Triton >= 3.5 appends two scratch pointers that TensorRT passes as
  null, so the kernel must need no global scratch (checked). A JIT implementation (Python + torch at
  run time) is registered too, for `PREFER_JIT` builds and debugging.
- `muse::MusePyramidSequence`: shape function + JIT implementation only. The fused pyramid is five
  launches with a scratch activation map between them and one AOT plugin is one kernel launch with no
  workspace, so it has no AOT form. Plans that must run without Python export the pyramid as standard
  ONNX ops (`muse-tvr export onnx --pyramid decomposed`, the default), which TensorRT runs natively.

Layout: everything above the "TensorRT registration" line is pure Python (shape arithmetic, the launch
grid, the int32 argument list, the PTX compile and its ABI checks) and imports without TensorRT, so the
tests run it without TensorRT. `register_plugins()` imports `tensorrt.plugin` lazily.

NOT verified: the test suite runs where TensorRT cannot be installed (see docs/tensorrt.md); the
registration code is written against the documented `tensorrt.plugin` API and has not been executed.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..kernels.aot import MIN_PTX_VERSION
from ..kernels.contracts import (ACTIVATION_TYPES, BI_SELECTIVE_SCAN, CONTRACTS, PLUGIN_NAMESPACE,
                                 PLUGIN_VERSION, PYRAMID_SEQUENCE, OpContract)

# tensorrt.plugin rules (tensorrt/plugin/_validate.py): namespaces it reserves, attribute names it forbids,
# the attribute kinds it can serialise, and the version every quickly-deployable plugin reports.
RESERVED_NAMESPACES = frozenset({"", "trt", "tensorrt", "std"})
DISALLOWED_ATTRIBUTE_NAMES = frozenset({"outputs", "stream", "tactic"})
QDP_PLUGIN_VERSION = "1"
# ONNX type string -> TensorRT AutoTuneCombination type name and Triton pointer element type.
TRT_TYPE = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(bfloat16)": "BF16"}
TRITON_TYPE = {"FP32": "fp32", "FP16": "fp16", "BF16": "bf16"}

# Deployment driver: the PTX ISA baked into a plan must be one the driver that loads the plan can JIT.
# CUDA 12.4 drivers (>= 550) are the default floor; override with MUSE_TRT_DRIVER_CUDA or driver_cuda=.
DEFAULT_DRIVER_CUDA = "12.4"


# ===================================================================================== signatures
def attribute_annotation(kind: str) -> Any:
    """The Python annotation tensorrt.plugin needs for a contract attribute kind (1-D lists are numpy)."""
    import numpy as np
    import numpy.typing as npt

    table = {"int": int, "float": float, "string": str,
             "floats": npt.NDArray[np.float32], "ints": npt.NDArray[np.int32]}
    if kind not in table:
        raise ValueError(f"attribute kind {kind!r} has no TensorRT plugin field type")
    return table[kind]


@dataclass(frozen=True)
class PluginSignature:
    """What a TensorRT plugin registration for one contract looks like (derived, never hand-written)."""

    contract: OpContract
    namespace: str
    name: str
    version: str
    inputs: tuple[str, ...]          # tensor input names, variadic input expanded to name_0..name_k
    input_types: tuple[str, ...]     # "T" (activation) or "F32", per input
    attributes: tuple[tuple[str, str], ...]  # (name, kind) of the plugin fields, in contract order
    outputs: tuple[str, ...]
    output_types: tuple[str, ...]
    has_aot: bool

    @property
    def plugin_id(self) -> str:
        return f"{self.namespace}::{self.name}"

    def type_string(self, activation_types: Sequence[str] | None = None) -> str:
        """AutoTuneCombination types: one entry per input then output. `|` ties all activation positions
        to the same choice (all FP32 or all FP16); parameters are always FP32."""
        act = activation_types or [TRT_TYPE[t] for t in self.contract.inputs[0].onnx_types]
        tied = "|".join(act)
        return ", ".join(tied if t == "T" else "FP32" for t in self.input_types + self.output_types)


def plugin_signature(contract: OpContract, n_variadic: int | None = None) -> PluginSignature:
    """The plugin registration for `contract`. A variadic last input needs `n_variadic` (how many tensors
    the exported node passes): TensorRT plugins have a fixed list of named tensor inputs."""
    names, types = [], []
    for t in contract.inputs:
        if t.variadic:
            if n_variadic is None or n_variadic < 1:
                raise ValueError(f"{contract.name}: input {t.name!r} is variadic; pass n_variadic (the number "
                                 f"of tensors the ONNX node gives it, >= 1)")
            names += [f"{t.name}_{i}" for i in range(n_variadic)]
            types += [t.type_var] * n_variadic
        else:
            names.append(t.name)
            types.append(t.type_var)
    return PluginSignature(
        contract=contract, namespace=PLUGIN_NAMESPACE, name=contract.name, version=PLUGIN_VERSION,
        inputs=tuple(names), input_types=tuple(types),
        attributes=tuple((a.name, a.kind) for a in contract.attributes),
        outputs=tuple(t.name for t in contract.outputs), output_types=tuple(t.type_var for t in contract.outputs),
        has_aot=contract.name in AOT_KERNELS)


def python_signature(sig: PluginSignature, tensor_desc: type, kind: str = "register",
                     return_annotation: Any = inspect.Signature.empty) -> inspect.Signature:
    """The Python signature tensorrt.plugin inspects on a decorated function.

    kind "register": (tensors: TensorDesc..., attributes...) -> return_annotation;
    "aot_impl": (tensors..., attributes..., outputs, tactic) -> return_annotation;
    "impl": (tensors..., attributes..., outputs, stream); "autotune": (tensors..., attributes..., outputs).
    The AOT implementation lists every attribute because TensorRT's AOT plugin calls it with all of them.
    """
    P = inspect.Parameter
    params = [P(n, P.POSITIONAL_OR_KEYWORD, annotation=tensor_desc) for n in sig.inputs]
    for name, k in sig.attributes:
        params.append(P(name, P.POSITIONAL_OR_KEYWORD, annotation=attribute_annotation(k)))
    tail = {"register": [], "autotune": ["outputs"], "impl": ["outputs", "stream"],
            "aot_impl": ["outputs", "tactic"]}
    if kind not in tail:
        raise ValueError(f"unknown signature kind {kind!r}")
    params += [P(n, P.POSITIONAL_OR_KEYWORD) for n in tail[kind]]
    return inspect.Signature(params, return_annotation=return_annotation)


def check_io_types(sig: PluginSignature, input_types: Sequence[str]) -> None:
    """Raise a clear error unless the TensorRT input types ("FP32", "FP16", ...) fit the contract:
    every activation input shares one allowed type, every parameter input is FP32."""
    if len(input_types) != len(sig.inputs):
        raise ValueError(f"{sig.plugin_id}: {len(input_types)} inputs, the contract has {len(sig.inputs)} "
                         f"({', '.join(sig.inputs)})")
    allowed = [TRT_TYPE[t] for t in ACTIVATION_TYPES]
    act = {ty for ty, tv in zip(input_types, sig.input_types) if tv == "T"}
    if len(act) > 1:
        raise ValueError(f"{sig.plugin_id}: activation inputs must share one type, got {sorted(act)}")
    if act and next(iter(act)) not in allowed:
        raise ValueError(f"{sig.plugin_id}: activations are {next(iter(act))}; supported {allowed}")
    for name, ty, tv in zip(sig.inputs, input_types, sig.input_types):
        if tv == "F32" and ty != "FP32":
            raise ValueError(f"{sig.plugin_id}: input {name!r} must be FP32 (SSM parameters), got {ty}")


# ====================================================================================== shapes
def scan_output_dims(u_f_dims: Sequence[Any]) -> tuple[Any, ...]:
    """BiSelectiveScan: y has u_f's shape (B, L, D)."""
    if len(u_f_dims) != 3:
        raise ValueError(f"BiSelectiveScan: u_f must be rank 3 (B, L, D), got rank {len(u_f_dims)}")
    return tuple(u_f_dims)


def pyramid_output_dims(tokens_dims: Sequence[Any], scales: Sequence[float], grid: int) -> tuple[Any, ...]:
    """MusePyramidSequence: tokens (B, T, 1+g*g, C) -> (B, sequence_length(T, g, scales), C).

    Works on ints and on tensorrt.plugin ShapeExprs. ShapeExpr only defines the operators with itself on
    the LEFT (no __rmul__); `sequence_length` (scale-wise order) computes `T * (1 + level tokens)`, the
    symbolic dim first.
    """
    if len(tokens_dims) != 4:
        raise ValueError(f"MusePyramidSequence: tokens must be rank 4 (B, T, 1+g*g, C), got {len(tokens_dims)}")
    from ..kernels.pyramid import sequence_length

    b, t, _, c = tokens_dims
    return (b, sequence_length(t, int(grid), [float(s) for s in scales]), c)


# ============================================================================== AOT kernel launch
SCAN_KERNEL_MODULE = "muse_tvr.kernels.selective_scan.triton_scan"
SCAN_KERNEL_SPEC = "bidirectional_scan"
# Contract input -> the scan kernel's pointer parameter, so a reordering on either side is caught.
SCAN_POINTER_OF_INPUT = {
    "u_f": "uf_ptr", "delta_f": "dtf_ptr", "B_f": "Bf_ptr", "C_f": "Cf_ptr", "u_b": "ub_ptr",
    "delta_b": "dtb_ptr", "B_b": "Bb_ptr", "C_b": "Cb_ptr", "z": "z_ptr", "A_f": "A_f_ptr", "A_b": "A_b_ptr",
    "D_f": "D_f_ptr", "D_b": "D_b_ptr", "delta_bias_f": "bias_f_ptr", "delta_bias_b": "bias_b_ptr",
}
SCAN_POINTER_OF_OUTPUT = {"y": "out_ptr"}
AOT_KERNELS = {BI_SELECTIVE_SCAN.name: (SCAN_KERNEL_MODULE, SCAN_KERNEL_SPEC)}


def scan_block_d() -> int:
    """Channels per program on a GPU: the value the Triton wrapper itself uses outside the interpreter."""
    from ..kernels.selective_scan.triton_scan import default_block_d

    return default_block_d(512, interpret=False)


def scan_kernel_spec(activation: str, d_state: int, block_d: int | None = None) -> dict[str, Any]:
    """The scan kernel's AOT spec (`triton_scan.AOT_SPECS`) for TensorRT type `activation` ("FP32"/"FP16")."""
    import importlib

    if activation not in TRITON_TYPE:
        raise ValueError(f"unsupported activation type {activation!r}; choose from {sorted(TRITON_TYPE)}")
    factory = importlib.import_module(SCAN_KERNEL_MODULE).AOT_SPECS[SCAN_KERNEL_SPEC]
    return factory(TRITON_TYPE[activation], int(d_state), block_d or scan_block_d())


def scan_int_args(length: Any, d: Any, n: Any) -> dict[str, Any]:
    """The scan kernel's int32 arguments by name, for TensorRT's contiguous (LINEAR) tensors:
    u/delta/z are (B, L, D) so their (batch, row) strides are (L*D, D); B/C are (B, L, N): (L*N, N).
    Works on ints and ShapeExprs (symbolic first in every product)."""
    ld, ln = length * d, length * n
    return {"L": length, "D": d, "s_ub": ld, "s_ul": d, "s_dtb": ld, "s_dtl": d,
            "s_bcb": ln, "s_bcl": n, "s_zb": ld, "s_zl": d}


def ordered_int_args(spec: Mapping[str, Any], values: Mapping[str, Any]) -> list[Any]:
    """`values` in the order of the spec's "i32" parameters (the kernel's ABI order)."""
    names = [k for k, v in spec["signature"].items() if v == "i32"]
    missing = [k for k in names if k not in values]
    extra = [k for k in values if k not in names]
    if missing or extra:
        raise ValueError(f"int32 kernel arguments do not match the kernel: missing {missing}, unexpected {extra}")
    return [values[k] for k in names]


def scan_launch(batch: Any, d: Any, block_d: int, num_warps: int, shared: int,
                cdiv: Callable[[Any, int], Any]) -> dict[str, Any]:
    """Launch parameters of the scan kernel: grid (B, cdiv(D, BLOCK_D)), one block of num_warps warps."""
    return {"grid_x": batch, "grid_y": cdiv(d, block_d), "grid_z": 1,
            "block_x": num_warps * 32, "block_y": 1, "block_z": 1, "shared_mem": shared}


def abi_problems(spec: Mapping[str, Any], kernel, sig: PluginSignature,
                 pointer_of_input: Mapping[str, str], pointer_of_output: Mapping[str, str],
                 appended: int) -> list[str]:
    """Check a compiled kernel against the ABI TensorRT calls AOT kernels with (empty = fine).

    Spec side: the kernel's non-constexpr parameters are exactly the plugin inputs (contract order, each
    with the pointer element type the contract's dtype implies), then int32 scalars, then the outputs;
    no float scalars. PTX side: the `.param` list is that many u64 pointers, u32 scalars, pointers, plus
    `appended` trailing scratch pointers (which TensorRT passes as null)."""
    problems = []
    params = [(k, v) for k, v in spec["signature"].items() if v != "constexpr"]
    n_in, n_out = len(sig.inputs), len(sig.outputs)
    n_int = len(params) - n_in - n_out
    want_in = [pointer_of_input.get(n, f"<{n}>") for n in sig.inputs]
    want_out = [pointer_of_output.get(n, f"<{n}>") for n in sig.outputs]
    if [k for k, _ in params[:n_in]] != want_in:
        problems.append(f"kernel inputs {[k for k, _ in params[:n_in]]} != contract inputs mapped {want_in}")
    if [k for k, _ in params[len(params) - n_out:]] != want_out:
        problems.append(f"kernel outputs {[k for k, _ in params[len(params) - n_out:]]} != {want_out}")
    for k, v in params[n_in:len(params) - n_out]:
        if v != "i32":
            problems.append(f"scalar parameter {k!r} is {v!r}; TensorRT passes only int32 scalars")
    for (k, v), tv in zip(params[:n_in] + params[len(params) - n_out:], sig.input_types + sig.output_types):
        if not v.startswith("*"):
            problems.append(f"tensor parameter {k!r} is {v!r}, not a pointer")
        elif tv == "F32" and v != "*fp32":
            problems.append(f"parameter {k!r} is {v!r}; the contract says float32")
    kinds = ["ptr" if ".ptr" in p or ".u64" in p else ("u32" if ".u32" in p or ".s32" in p else p)
             for p in kernel.params]
    want = ["ptr"] * n_in + ["u32"] * n_int + ["ptr"] * n_out + ["ptr"] * appended
    if kinds != want:
        problems.append(f"PTX parameters {kinds} do not follow inputs/int32/outputs(+{appended} scratch): {want}")
    return problems


def ptx_cap(arch: int, driver_cuda: str | None = None) -> int:
    """The PTX ISA version (x10, Triton's `ptx_version` option) to compile with: the newest one a driver of
    CUDA version `driver_cuda` can JIT (Triton's own CUDA -> PTX table), checked against the oldest ISA
    that can target sm_`arch`."""
    from triton.backends.nvidia.compiler import ptx_get_version

    driver_cuda = driver_cuda or os.environ.get("MUSE_TRT_DRIVER_CUDA") or DEFAULT_DRIVER_CUDA
    cap = ptx_get_version(str(driver_cuda))
    need = MIN_PTX_VERSION.get(int(arch))
    if need is not None and cap < need:
        raise ValueError(f"a CUDA {driver_cuda} driver JITs PTX ISA up to {cap / 10:.1f}, but sm_{arch} needs "
                         f"PTX ISA >= {need / 10:.1f}: deploy with a newer driver (MUSE_TRT_DRIVER_CUDA)")
    return cap


def compile_scan_kernel(activation: str, d_state: int, arch: int, driver_cuda: str | None = None,
                        block_d: int | None = None):
    """Compile the scan kernel for sm_`arch` in this process (no GPU needed; not under TRITON_INTERPRET)
    and check it is bakeable: returns (spec, AotKernel). Raises ValueError listing every ABI problem."""
    from ..kernels.aot import compile_spec

    cap = ptx_cap(arch, driver_cuda)
    spec = scan_kernel_spec(activation, d_state, block_d)
    kernel = compile_spec(spec, arch=arch, ptx_version=cap)
    check_scan_kernel(spec, kernel, cap)
    return spec, kernel


def check_scan_kernel(spec: Mapping[str, Any], kernel, cap: int) -> None:
    from ..kernels.aot import aot_problems, appended_params_for_this_triton

    appended = appended_params_for_this_triton()
    problems = aot_problems(kernel, (cap // 10, cap % 10), appended)
    problems += abi_problems(spec, kernel, plugin_signature(BI_SELECTIVE_SCAN), SCAN_POINTER_OF_INPUT,
                             SCAN_POINTER_OF_OUTPUT, appended)
    if problems:
        raise ValueError("the scan kernel cannot be baked into a TensorRT plan:\n  " + "\n  ".join(problems))


def build_target_arch() -> int:
    """Compute capability the plan is built for: MUSE_TRT_ARCH if set (e.g. "90"), else the current GPU."""
    env = os.environ.get("MUSE_TRT_ARCH")
    if env:
        return int(env.replace("sm_", "").rstrip("a"))
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to pick the kernel architecture; set MUSE_TRT_ARCH (e.g. 90)")
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


# ============================================================================ TensorRT registration
_REGISTERED: dict[str, PluginSignature] = {}


def import_tensorrt():
    """(tensorrt, tensorrt.plugin), or an ImportError that says what to install."""
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError as e:  # also raised when the PyPI placeholder is installed without its libraries
        raise ImportError(
            "TensorRT is not importable here (" + str(e) + "). Install TensorRT >= 10.9 with its Python "
            "bindings on a machine with an NVIDIA GPU and driver, e.g. `pip install tensorrt-cu12` (pulls the "
            "libraries from NVIDIA's index) or the TensorRT tar/deb packages plus their python wheel. "
            "See docs/tensorrt.md.") from e
    return trt, trtp


def _trt_type_name(trt, dtype) -> str:
    table = {trt.float32: "FP32", trt.float16: "FP16"}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = "BF16"
    if dtype not in table:
        raise ValueError(f"unsupported TensorRT data type {dtype}")
    return table[dtype]


def register_plugins(pyramid_weights: int | None = None, driver_cuda: str | None = None,
                     with_jit: bool = True) -> dict[str, PluginSignature]:
    """Register the TensorRT plugins of every contract with `tensorrt.plugin` (idempotent).

    pyramid_weights: how many weight tensors the exported `MusePyramidSequence` node takes (its variadic
      input); None skips that plugin (graphs exported with the decomposed pyramid do not use it).
    driver_cuda: CUDA version of the oldest driver that will load the plan (caps the PTX ISA version).
    with_jit: also register the Python/torch JIT implementations (needed for PREFER_JIT networks and for
      the pyramid plugin; never used by a plan built from `aot=1` nodes).
    """
    trt, trtp = import_tensorrt()
    from typing import Tuple

    out = {}
    for contract in CONTRACTS:
        n_var = pyramid_weights if contract is PYRAMID_SEQUENCE else None
        if contract.inputs[-1].variadic and n_var is None:
            continue
        sig = plugin_signature(contract, n_var)
        if sig.plugin_id in _REGISTERED:
            if _REGISTERED[sig.plugin_id].inputs != sig.inputs:
                raise RuntimeError(f"{sig.plugin_id} is already registered with {len(_REGISTERED[sig.plugin_id].inputs)}"
                                   f" inputs; a process can hold one registration per plugin id")
            out[sig.plugin_id] = _REGISTERED[sig.plugin_id]
            continue
        ret = trtp.TensorDesc if len(sig.outputs) == 1 else Tuple[tuple([trtp.TensorDesc] * len(sig.outputs))]
        _define(trtp.register(sig.plugin_id), _shape_function(sig, trt), sig,
                python_signature(sig, trtp.TensorDesc, "register", ret))
        _define(trtp.autotune(sig.plugin_id), _autotune_function(sig, trtp), sig,
                python_signature(sig, trtp.TensorDesc, "autotune"))
        if sig.has_aot:
            if not hasattr(trtp, "aot_impl"):
                raise ImportError(f"tensorrt {trt.__version__} has no tensorrt.plugin.aot_impl; AOT plugins "
                                  "need TensorRT >= 10.9")
            aot_ret = Tuple[str, str, trtp.KernelLaunchParams, trtp.SymIntExprs]
            _define(trtp.aot_impl(sig.plugin_id), _scan_aot_function(sig, trt, trtp, driver_cuda), sig,
                    python_signature(sig, trtp.TensorDesc, "aot_impl", aot_ret))
        if with_jit:
            _define(trtp.impl(sig.plugin_id), _jit_function(sig), sig,
                    python_signature(sig, trtp.Tensor, "impl"))
        _REGISTERED[sig.plugin_id] = sig
        out[sig.plugin_id] = sig
    return out


def _define(decorator, fn, sig: PluginSignature, signature: inspect.Signature) -> None:
    # tensorrt.plugin reads the parameter list with inspect.signature, which honours __signature__: the
    # generated functions take *args but present exactly the contract's parameters.
    fn.__signature__ = signature
    fn.__name__ = f"{sig.name}_{fn.__name__}"
    decorator(fn)


def _split(sig: PluginSignature, args: Sequence[Any]) -> tuple[list[Any], dict[str, Any], list[Any]]:
    n = len(sig.inputs)
    tensors = list(args[:n])
    attrs = dict(zip([a for a, _ in sig.attributes], args[n:n + len(sig.attributes)]))
    return tensors, attrs, list(args[n + len(sig.attributes):])


def _shape_function(sig: PluginSignature, trt):
    def shape(*descs, **attrs):
        descs = list(descs)
        check_io_types(sig, [_trt_type_name(trt, d.dtype) for d in descs])
        if sig.contract is BI_SELECTIVE_SCAN:
            scan_output_dims(list(descs[0].shape_expr))
            return descs[0].like()
        import tensorrt.plugin as trtp

        dims = pyramid_output_dims(list(descs[0].shape_expr), [float(s) for s in attrs["scales"]], int(attrs["grid"]))
        return trtp.from_shape_expr(dims, dtype=descs[0].dtype)
    return shape


def _autotune_function(sig: PluginSignature, trtp):
    def autotune(*args):
        return [trtp.AutoTuneCombination(sig.type_string(), "LINEAR")]
    return autotune


def _scan_aot_function(sig: PluginSignature, trt, trtp, driver_cuda: str | None):
    def aot(*args):
        descs = _split(sig, args)[0]
        u_f, A_f = descs[0], descs[sig.inputs.index("A_f")]
        check_io_types(sig, [_trt_type_name(trt, d.dtype) for d in descs])
        n_expr = A_f.shape_expr[1]
        if n_expr.is_fake or not n_expr.is_constant:
            raise ValueError("BiSelectiveScan: d_state (A_f's second dim) must be a build-time constant; "
                             "A_f should be an initializer of the ONNX graph")
        d_state = int(n_expr.constant_value())
        b, length, d = u_f.shape_expr[0], u_f.shape_expr[1], u_f.shape_expr[2]
        spec, kernel = compile_scan_kernel(_trt_type_name(trt, u_f.dtype), d_state, build_target_arch(),
                                           driver_cuda)
        block_d = spec["constexprs"]["BLOCK_D"]
        launch = trtp.KernelLaunchParams()
        for k, v in scan_launch(b, d, block_d, kernel.num_warps, kernel.shared, trtp.cdiv).items():
            setattr(launch, k, v)
        ints = ordered_int_args(spec, scan_int_args(length, d, n_expr))
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(v) for v in ints])
        return kernel.name, kernel.ptx, launch, extra
    return aot


def _jit_function(sig: PluginSignature):
    def impl(*args, **kw):
        import torch

        descs, attrs, rest = _split(sig, args)
        outputs = rest[0] if rest else kw["outputs"]
        stream = rest[1] if len(rest) > 1 else kw["stream"]
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            ts = [torch.as_tensor(t, device="cuda") for t in descs]
            out = torch.as_tensor(outputs[0], device="cuda")
            if sig.contract is BI_SELECTIVE_SCAN:
                from ..kernels.selective_scan.triton_scan import bidirectional_scan_triton

                out.copy_(bidirectional_scan_triton(*ts))
            else:
                res = PYRAMID_SEQUENCE.torch_op()(ts[0], ts[1:], [float(s) for s in attrs["scales"]],
                                                  int(attrs["grid"]), float(attrs["layer_norm_eps"]))
                out.copy_(res)
    return impl
