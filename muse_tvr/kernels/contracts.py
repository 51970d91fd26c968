"""The custom-op contracts: every custom op of the exported graphs is declared ONCE here.

A contract names the op, its ONNX domain and opset version, its inputs and outputs in order with their
dtypes, and its attributes. Everything else is derived from it, so the parts cannot drift apart:

- the PyTorch op (`torch.ops.muse.<torch_name>`), defined through `torch.library` from the contract's
  schema string; CPU runs the C++ scan and the reference pyramid, CUDA the project's Triton kernels;
- the ONNX schema (`onnx.defs.OpSchema`), registered so that `onnx.checker.check_model(full_check=True)`
  checks the custom nodes' inputs, types and attributes;
- the exporter translation: `OpContract.call()` emits the node with `torch.onnx.ops.symbolic` while
  `torch.onnx.export` traces, and calls the PyTorch op otherwise;
- the node attributes TensorRT's ONNX parser reads (`plugin_namespace`, `plugin_version`, `aot`): TensorRT
  maps a node to a plugin by op_type (it ignores the domain), so the op_type IS the plugin name;
- the ONNX Runtime kernel registration: the C++ library (`cpp/muse_ort_ops.cc`) registers
  `ort_kernels()` = (domain, op_type, type) for each op; a test reads the library back and compares.

`tests/test_export_contracts.py` checks that all of these agree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .pyramid.reference import LAYER_NORM_EPS

DOMAIN = "muse"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "muse"
PLUGIN_VERSION = "1"
# The node attributes TensorRT's ONNX parser reads itself: the plugin namespace and version the node binds
# to, and whether the plugin's ahead-of-time (baked-into-the-plan) implementation should be used. Every
# custom node carries them (`OpContract.all_attributes`); they are never plugin fields.
ATTR_PLUGIN_NAMESPACE = "plugin_namespace"
ATTR_PLUGIN_VERSION = "plugin_version"
ATTR_AOT = "aot"
PLUGIN_ATTRIBUTES = (ATTR_PLUGIN_NAMESPACE, ATTR_PLUGIN_VERSION, ATTR_AOT)

# ONNX type strings for the dtype classes a contract can name.
ACTIVATION_TYPES = ("tensor(float)", "tensor(float16)")
FLOAT32 = ("tensor(float)",)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. `type_var` "T" means the activation dtype (fp32 or fp16, the same for every
    T in one node); "F32" means always float32 (SSM parameters). `shape` is documentation in symbols."""

    name: str
    type_var: str
    shape: str
    doc: str = ""
    variadic: bool = False  # only for the last input: one or more tensors

    @property
    def onnx_types(self) -> tuple[str, ...]:
        return ACTIVATION_TYPES if self.type_var == "T" else FLOAT32


@dataclass(frozen=True)
class AttrSpec:
    """An op attribute: `kind` is one of int, float, string, floats, ints; `default` None = required."""

    name: str
    kind: str
    default: Any = None
    doc: str = ""

    def torch_type(self) -> str:
        return {"int": "int", "float": "float", "string": "str", "floats": "float[]", "ints": "int[]"}[self.kind]


_PLUGIN_ATTR_SPECS = (
    AttrSpec(ATTR_PLUGIN_NAMESPACE, "string", PLUGIN_NAMESPACE, "TensorRT plugin namespace"),
    AttrSpec(ATTR_PLUGIN_VERSION, "string", PLUGIN_VERSION, "TensorRT plugin version"),
    AttrSpec(ATTR_AOT, "int", 0, "1: TensorRT uses the plugin's ahead-of-time implementation"),
)


@dataclass(frozen=True)
class OpContract:
    name: str          # ONNX op_type == TensorRT plugin name; must not collide with an ONNX built-in
    torch_name: str    # name inside the torch.library namespace `muse`
    doc: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttrSpec, ...] = ()  # op-specific; the plugin attributes are added by `all_attributes`
    domain: str = DOMAIN
    version: int = DOMAIN_VERSION

    # ----- names ---------------------------------------------------------------------------------
    @property
    def qualified_torch_name(self) -> str:
        return f"{self.domain}::{self.torch_name}"

    @property
    def plugin_name(self) -> str:
        """The TensorRT plugin id `namespace::name` (tensorrt.plugin.register's argument)."""
        return f"{PLUGIN_NAMESPACE}::{self.name}"

    def all_attributes(self) -> tuple[AttrSpec, ...]:
        return self.attributes + _PLUGIN_ATTR_SPECS

    # ----- torch ---------------------------------------------------------------------------------
    def torch_schema(self) -> str:
        """The torch.library schema string, e.g. `bi_selective_scan(Tensor u_f, ...) -> Tensor`."""
        args = []
        for t in self.inputs:
            args.append(f"Tensor[] {t.name}" if t.variadic else f"Tensor {t.name}")
        for a in self.attributes:
            args.append(f"{a.torch_type()} {a.name}")
        outs = ", ".join("Tensor" for _ in self.outputs)
        return f"{self.torch_name}({', '.join(args)}) -> {outs if len(self.outputs) == 1 else '(' + outs + ')'}"

    def torch_op(self):
        ensure_torch_ops()
        return getattr(torch.ops.muse, self.torch_name).default

    # ----- ONNX ----------------------------------------------------------------------------------
    def onnx_schema(self):
        from onnx.defs import OpSchema

        A = OpSchema.AttrType
        kinds = {"int": A.INT, "float": A.FLOAT, "string": A.STRING, "floats": A.FLOATS, "ints": A.INTS}
        attrs = []
        for a in self.all_attributes():
            if a.default is None:
                attrs.append(OpSchema.Attribute(a.name, kinds[a.kind], a.doc, required=True))
            else:
                attrs.append(OpSchema.Attribute(a.name, _onnx_attr_default(a), a.doc))
        fp = OpSchema.FormalParameter
        opt = OpSchema.FormalParameterOption
        inputs = [fp(t.name, t.type_var, f"{t.shape} {t.doc}".strip(),
                     param_option=opt.Variadic if t.variadic else opt.Single) for t in self.inputs]
        outputs = [fp(t.name, t.type_var, f"{t.shape} {t.doc}".strip()) for t in self.outputs]
        used = {t.type_var for t in self.inputs + self.outputs}
        constraints = [(v, list(ACTIVATION_TYPES if v == "T" else FLOAT32),
                        "activations" if v == "T" else "SSM parameters, float32") for v in sorted(used)]
        return OpSchema(self.name, self.domain, self.version, doc=self.doc, inputs=inputs, outputs=outputs,
                        type_constraints=constraints, attributes=attrs)

    def node_attributes(self, values: dict[str, Any] | None = None, aot: bool = False) -> dict[str, Any]:
        """All attributes a node of this op carries: op-specific values + the TensorRT plugin ones."""
        values = dict(values or {})
        out = {}
        for a in self.attributes:
            if a.name in values:
                out[a.name] = values.pop(a.name)
            elif a.default is None:
                raise ValueError(f"{self.name}: attribute {a.name!r} is required")
            else:
                out[a.name] = a.default
        if values:
            raise ValueError(f"{self.name}: unknown attributes {sorted(values)}")
        out.update({ATTR_PLUGIN_NAMESPACE: PLUGIN_NAMESPACE, ATTR_PLUGIN_VERSION: PLUGIN_VERSION,
                    ATTR_AOT: int(aot)})
        return out

    def ort_kernels(self) -> list[tuple[str, str, str]]:
        """(domain, op_type, element type) for each kernel the ORT op library must register."""
        types = ["float"]
        if any(t.type_var == "T" for t in self.inputs):
            types.append("float16")
        return [(self.domain, self.name, ty) for ty in types]

    # ----- calling -------------------------------------------------------------------------------
    def call(self, inputs: Sequence[Any], attrs: dict[str, Any] | None = None, *,
             out_shape: Sequence[Any] | None = None, aot: bool = False) -> torch.Tensor:
        """Run the op, or emit its ONNX node while `torch.onnx.export` traces.

        Inputs go in contract order (a variadic last input is a list). `out_shape` is the output shape,
        needed only during export (the symbolic node cannot infer it).
        """
        attrs = dict(attrs or {})
        if torch.onnx.is_in_onnx_export():
            flat = list(inputs[:-1]) + list(inputs[-1]) if self.inputs[-1].variadic else list(inputs)
            first = flat[0]
            return torch.onnx.ops.symbolic(
                f"{self.domain}::{self.name}", flat, self.node_attributes(attrs, aot=aot),
                dtype=first.dtype, shape=list(out_shape if out_shape is not None else first.shape),
                version=self.version)
        ordered = [attrs[a.name] if a.name in attrs else a.default for a in self.attributes]
        return self.torch_op()(*inputs, *ordered)


def _onnx_attr_default(a: AttrSpec):
    import onnx

    return onnx.helper.make_attribute(a.name, a.default)


# ======================================================================================= the contracts
BI_SELECTIVE_SCAN = OpContract(
    name="BiSelectiveScan",
    torch_name="bi_selective_scan",
    doc=("Both scans of a bidirectional (Vim v2) Mamba layer, gated once: silu(z) * (y_f + y_b). "
         "Forward direction walks t = 0..L-1, backward t = L-1..0, both on tensors in the original token "
         "order. Per direction: dt = softplus(delta + delta_bias) (mamba-ssm threshold 20); "
         "s_t = exp(dt_t A) s_prev + dt_t u_t B_t; y_t = s_t . C_t + D u_t. State float32."),
    inputs=(
        TensorSpec("u_f", "T", "(B, L, D)", "forward-direction scan input (after conv + SiLU)"),
        TensorSpec("delta_f", "T", "(B, L, D)", "forward dt before bias and softplus"),
        TensorSpec("B_f", "T", "(B, L, N)"),
        TensorSpec("C_f", "T", "(B, L, N)"),
        TensorSpec("u_b", "T", "(B, L, D)", "backward-direction input, original order"),
        TensorSpec("delta_b", "T", "(B, L, D)"),
        TensorSpec("B_b", "T", "(B, L, N)"),
        TensorSpec("C_b", "T", "(B, L, N)"),
        TensorSpec("z", "T", "(B, L, D)", "shared gate"),
        TensorSpec("A_f", "F32", "(D, N)", "-exp(A_log)"),
        TensorSpec("A_b", "F32", "(D, N)"),
        TensorSpec("D_f", "F32", "(D,)"),
        TensorSpec("D_b", "F32", "(D,)"),
        TensorSpec("delta_bias_f", "F32", "(D,)"),
        TensorSpec("delta_bias_b", "F32", "(D,)"),
    ),
    outputs=(TensorSpec("y", "T", "(B, L, D)"),),
)

PYRAMID_SEQUENCE = OpContract(
    name="MusePyramidSequence",
    torch_name="pyramid_sequence",
    doc=("MUSE's feature pyramid and scale-wise sequence assembly in one node: CLIP tokens (B, T, 1+g*g, C) "
         "-> (B, L, C), L = T * (1 + sum of level tokens). Levels per `scales` (0.5: MaxPool 2; 1.0: none; "
         "2.0: ConvTranspose 2x2 s2), each followed by Conv1x1 -> LayerNorm(C) -> GELU(erf) -> Conv3x3 -> "
         "LayerNorm(C). `weights` lists, level by level, every parameter of that level's Sequential in "
         "state-dict order."),
    inputs=(
        TensorSpec("tokens", "T", "(B, T, 1+g*g, C)", "CLIP last-layer tokens after ln_post and proj"),
        TensorSpec("weights", "T", "...", "pyramid parameters, level by level", variadic=True),
    ),
    outputs=(TensorSpec("sequence", "T", "(B, L, C)"),),
    attributes=(
        AttrSpec("scales", "floats", None, "pyramid scales, e.g. [0.5, 1.0, 2.0]"),
        AttrSpec("grid", "int", None, "side of the CLIP patch grid (7 for ViT-B/32)"),
        AttrSpec("layer_norm_eps", "float", LAYER_NORM_EPS),
    ),
)

CONTRACTS: tuple[OpContract, ...] = (BI_SELECTIVE_SCAN, PYRAMID_SEQUENCE)


# ================================================================================ torch registration
# CPU: the C++ scan when it builds (else the chunked scan, after a one-line warning) and the reference
# pyramid; CUDA: the Triton kernels. The variadic pyramid weights are `flat_params` order.
def _scan_cpu(*args):
    from .selective_scan import IMPLEMENTATIONS, fastest_cpu_scan
    return IMPLEMENTATIONS[fastest_cpu_scan()](*args)


def _scan_cuda(*args):
    from .selective_scan import bidirectional_scan_triton
    return bidirectional_scan_triton(*args)


def _pyramid(name: str):
    def impl(tokens, weights, scales, grid, layer_norm_eps):
        from .pyramid import IMPLEMENTATIONS, unflat_params
        return IMPLEMENTATIONS[name](tokens, unflat_params(list(weights), scales), tuple(scales), "scale_wise",
                                     layer_norm_eps)
    return impl


def _scan_fake(u_f, *rest):
    return torch.empty_like(u_f)


def _pyramid_fake(tokens, weights, scales, grid, layer_norm_eps):
    from .pyramid import sequence_length

    b, t, _, c = tokens.shape
    return tokens.new_empty((b, sequence_length(t, grid, scales), c))


_IMPLS: dict[str, tuple[Callable, Callable, Callable]] = {
    "bi_selective_scan": (_scan_cpu, _scan_cuda, _scan_fake),
    "pyramid_sequence": (_pyramid("reference"), _pyramid("triton"), _pyramid_fake),
}
_LIB = None


def ensure_torch_ops() -> None:
    """Define `torch.ops.muse.*` from the contracts (idempotent)."""
    global _LIB
    if _LIB is not None:
        return
    lib = torch.library.Library(DOMAIN, "FRAGMENT")
    for c in CONTRACTS:
        cpu, cuda, fake = _IMPLS[c.torch_name]
        lib.define(c.torch_schema())
        lib.impl(c.torch_name, cpu, "CPU")
        lib.impl(c.torch_name, cuda, "CUDA")
        torch.library.register_fake(c.qualified_torch_name, fake, lib=lib)
    _LIB = lib


def register_onnx_schemas() -> None:
    """Register every contract's OpSchema with onnx (idempotent) so the checker validates custom nodes."""
    import onnx.defs

    for c in CONTRACTS:
        if not onnx.defs.has(c.name, c.domain):
            onnx.defs.register_schema(c.onnx_schema())


def contract_table() -> list[dict[str, Any]]:
    """A JSON-friendly description of every contract (the export sidecar embeds it)."""
    rows = []
    for c in CONTRACTS:
        rows.append({
            "op_type": c.name, "domain": c.domain, "version": c.version, "torch_op": c.qualified_torch_name,
            "tensorrt_plugin": c.plugin_name,
            "inputs": [dataclasses.asdict(t) for t in c.inputs],
            "outputs": [dataclasses.asdict(t) for t in c.outputs],
            "attributes": [dataclasses.asdict(a) for a in c.all_attributes()],
            "ort_kernels": [list(k) for k in c.ort_kernels()],
        })
    return rows
