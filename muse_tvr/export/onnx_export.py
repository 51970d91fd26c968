"""ONNX export of the video encoder, the MUSE head and the text encoder, in three variants.

Variants (all have the same custom nodes, in domain `muse`, from `contracts.py`):
- `plugin`:        custom nodes with `aot=1` + model-local function bodies in standard ONNX ops. For
                   TensorRT >= 10.7, whose parser uses the registered plugin when a node carries
                   `plugin_namespace`; any runtime without the plugin can still inline the bodies.
- `portable`:      custom nodes with `aot=0` + function bodies: plain ONNX Runtime (no op library) runs
                   it; ONNX Runtime WITH the op library uses the C++ kernels instead of the bodies.
- `plugin-nofunc`: the `plugin` file without function bodies: TensorRT <= 10.6 always preferred a local
                   function over a plugin, and ONNX Runtime with the op library loads it directly.

The PyTorch graph is exported once per (part, dtype); the variants are made from that one proto, so they
differ only in the function bodies and the `aot` attribute. Files: `{part}.{variant}.{dtype}.onnx` plus a
JSON sidecar `{same}.json`. The text encoder has no custom nodes: one file per dtype, `text.{dtype}.onnx`.

Function bodies: `BiSelectiveScan` is an ONNX `Scan` over time per direction (state (B, D, N) float32,
exp(dt*A) and dt*u*B precomputed for all steps outside the loop); `MusePyramidSequence` is the pyramid's
own standard-op graph, obtained by exporting `kernels.pyramid.pyramid_sequence_ref`.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..kernels.contracts import ATTR_AOT, BI_SELECTIVE_SCAN, CONTRACTS, PYRAMID_SEQUENCE, contract_table, register_onnx_schemas

VARIANTS = ("plugin", "portable", "plugin-nofunc")
PARTS = ("video", "head", "text")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_OPSET = 18


@dataclass
class ExportedFile:
    part: str
    variant: str
    dtype: str
    path: Path
    sidecar: Path


# ====================================================================================== function bodies
def bi_selective_scan_function(opset: int):
    """`muse::BiSelectiveScan` as a FunctionProto of standard ops (Scan over time, per direction)."""
    from onnx import TensorProto, helper

    c = BI_SELECTIVE_SCAN
    nodes = []
    F32 = TensorProto.FLOAT

    def const(name, values, dtype=TensorProto.INT64):
        nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name, dtype, [len(values)] if isinstance(values, list) else [], values if isinstance(values, list)
            else [values])))
        return name

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    ax_last = const("ax_last", [-1])
    ax_2 = const("ax_2", [2])
    twenty = const("twenty", 20.0, F32)
    zero = helper.make_tensor("zero", F32, [1], [0.0])

    # Loop body: one time step for every batch row and channel at once.
    body_nodes = [
        helper.make_node("Constant", [], ["b_ax1"], value=helper.make_tensor("b_ax1", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["b_axl"], value=helper.make_tensor("b_axl", TensorProto.INT64, [1], [-1])),
        helper.make_node("Mul", ["dA_t", "s_in"], ["decayed"]),
        helper.make_node("Add", ["decayed", "dBu_t"], ["s_out"]),
        helper.make_node("Unsqueeze", ["C_t", "b_ax1"], ["C_t1"]),
        helper.make_node("Mul", ["s_out", "C_t1"], ["sC"]),
        helper.make_node("ReduceSum", ["sC", "b_axl"], ["y_t"], keepdims=0),
    ]
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        body_nodes, "scan_step",
        [vi("s_in", F32, None), vi("dA_t", F32, None), vi("dBu_t", F32, None), vi("C_t", F32, None)],
        [vi("s_out", F32, None), vi("y_t", F32, None)])

    ys = []
    for tag, reverse in (("f", 0), ("b", 1)):
        u = node("Cast", [f"u_{tag}"], f"uf_{tag}", to=F32)
        dl = node("Add", [node("Cast", [f"delta_{tag}"], f"dlc_{tag}", to=F32), f"delta_bias_{tag}"], f"dl_{tag}")
        # mamba-ssm's softplus: identity above 20
        dt = node("Where", [node("Greater", [dl, twenty], f"big_{tag}"), dl,
                            node("Softplus", [dl], f"sp_{tag}")], f"dt_{tag}")
        dA = node("Exp", [node("Mul", [node("Unsqueeze", [dt, ax_last], f"dtx_{tag}"), f"A_{tag}"],
                               f"dtA_{tag}")], f"dA_{tag}")
        dtu = node("Unsqueeze", [node("Mul", [dt, u], f"dtu0_{tag}"), ax_last], f"dtu_{tag}")
        Bx = node("Unsqueeze", [node("Cast", [f"B_{tag}"], f"Bc_{tag}", to=F32), ax_2], f"Bx_{tag}")
        dBu = node("Mul", [dtu, Bx], f"dBu_{tag}")
        Cc = node("Cast", [f"C_{tag}"], f"Cc_{tag}", to=F32)
        batch = node("Shape", [u], f"bsz_{tag}", start=0, end=1)
        s_shape = node("Concat", [batch, node("Shape", [f"A_{tag}"], f"Ashape_{tag}")], f"sshape_{tag}", axis=0)
        s0 = node("ConstantOfShape", [s_shape], f"s0_{tag}", value=zero)
        nodes.append(helper.make_node(
            "Scan", [s0, dA, dBu, Cc], [f"sL_{tag}", f"yscan_{tag}"], body=body, num_scan_inputs=3,
            scan_input_axes=[1, 1, 1], scan_output_axes=[1], scan_input_directions=[reverse] * 3,
            scan_output_directions=[reverse]))
        ys.append(node("Add", [f"yscan_{tag}", node("Mul", [u, f"D_{tag}"], f"Du_{tag}")], f"y_{tag}"))
    zf = node("Cast", ["z"], "zf", to=F32)
    gate = node("Mul", [zf, node("Sigmoid", [zf], "zsig")], "gate")
    out = node("Mul", [node("Add", ys, "ysum"), gate], "gated")
    nodes.append(helper.make_node("CastLike", [out, "u_f"], ["y"]))
    return helper.make_function(
        c.domain, c.name, [t.name for t in c.inputs], [t.name for t in c.outputs], nodes,
        [helper.make_opsetid("", opset)], attributes=[a.name for a in c.all_attributes()])


def pyramid_sequence_function(head_graph, dtype: torch.dtype, opset: int):
    """`muse::MusePyramidSequence` as a FunctionProto: the standard-op graph of the reference pyramid.

    The body is this model's pyramid (its scales and grid), exported from `pyramid_sequence_ref`
    with the weights as inputs, so it is exactly the decomposed pyramid and cannot drift from it.
    """
    from onnx import helper, numpy_helper

    from ..kernels.pyramid import flat_params, pyramid_sequence_ref, unflat_params

    cfg = head_graph.config
    scales, eps = tuple(cfg.head.scales), cfg.head.layer_norm_eps
    weights = [w.detach() for w in flat_params(head_graph.pyramid, scales)]

    class Body(torch.nn.Module):
        def forward(self, tokens, ws):
            return pyramid_sequence_ref(tokens, unflat_params(ws, scales), scales, "scale_wise", eps)

    g = cfg.vision.grid
    tokens = torch.zeros(2, 3, 1 + g * g, cfg.embed_dim, dtype=dtype)
    names = ["tokens"] + [f"weights_{i}" for i in range(len(weights))]
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("frames")}
    prog = _torch_export(Body(), (tokens, list(weights)), names, ["sequence"],
                         (dims, [None] * len(weights)), opset)
    g_ = prog.graph
    nodes = [helper.make_node("Constant", [], [init.name], value=init) for init in g_.initializer]
    nodes += list(g_.node)
    # Function inputs are positional: the node's variadic weights map onto weights_0..weights_k.
    return helper.make_function(
        PYRAMID_SEQUENCE.domain, PYRAMID_SEQUENCE.name, [i.name for i in g_.input], [o.name for o in g_.output],
        nodes, [helper.make_opsetid("", opset)],
        attributes=[a.name for a in PYRAMID_SEQUENCE.all_attributes()]), len(weights)


# ============================================================================================= export
def _torch_export(module, args, input_names, output_names, dynamic_shapes, opset):
    import warnings

    with warnings.catch_warnings():
        # The exporter warns about axis names it merges; the names we give are the ones kept.
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=input_names,
                                 output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False)
    proto = prog.model_proto
    _fix_output_name_clashes(proto)
    return proto


def _fix_output_name_clashes(proto) -> None:
    """The exporter can give an inner value the same name as a graph output (torch's `embedding` op vs our
    `embedding` output), which breaks SSA form: rename the inner value."""
    outs = {o.name for o in proto.graph.output}
    producers: dict[str, list] = {}
    for n in proto.graph.node:
        for o in n.output:
            if o in outs:
                producers.setdefault(o, []).append(n)
    for name, nodes in producers.items():
        for k, n in enumerate(nodes[:-1]):  # the last producer writes the graph output
            new = f"{name}__inner{k}"
            n.output[list(n.output).index(name)] = new
            start = list(proto.graph.node).index(n)
            for m in list(proto.graph.node)[start + 1:]:
                if m is nodes[k + 1]:
                    m.input[:] = [new if i == name else i for i in m.input]
                    break
                m.input[:] = [new if i == name else i for i in m.input]


def example_inputs(config, part: str, dtype: torch.dtype, batch: int = 2, frames: int = 3,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for a part: names -> tensors in the export's dtypes (frames/tokens in `dtype`,
    mask float32 0/1 with at least one real frame per row, ids int64 shaped like tokenizer output)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, frames)
    if frames > 1:
        mask[0, -1] = 0  # one padded frame, so the masked pooling is exercised
    if part == "video":
        s = config.vision.image_size
        return {"frames": torch.randn(batch, frames, 3, s, s, generator=gen).to(dtype), "mask": mask}
    if part == "head":
        g, c = config.vision.grid, config.embed_dim
        return {"tokens": torch.randn(batch, frames, 1 + g * g, c, generator=gen).to(dtype), "mask": mask}
    if part == "text":
        w = config.max_words
        ids = torch.zeros(batch, w, dtype=torch.long)
        for i in range(batch):
            n = 3 + i % max(1, w - 4)
            ids[i, 0] = 49406
            ids[i, 1:n] = torch.randint(1, min(config.text.vocab_size, 49406), (n - 1,), generator=gen)
            ids[i, n] = min(49407, config.text.vocab_size - 1)
        return {"ids": ids}
    raise ValueError(f"unknown part {part!r}; choose from {PARTS}")


def build_graph(model, part: str, pyramid: str = "decomposed"):
    from .graph import HeadGraph, TextGraph, VideoGraph

    if part == "video":
        return VideoGraph(model, pyramid).eval()
    if part == "head":
        return HeadGraph(model, pyramid).eval()
    if part == "text":
        return TextGraph(model).eval()
    raise ValueError(f"unknown part {part!r}; choose from {PARTS}")


def _dynamic_shapes(part: str):
    B, T = torch.export.Dim("batch"), torch.export.Dim("frames")
    if part == "text":
        return {"ids": {0: B}}, {"ids": {0: "batch"}}
    first = "frames" if part == "video" else "tokens"
    return ({first: {0: B, 1: T}, "mask": {0: B, 1: T}},
            {first: {0: "batch", 1: "frames"}, "mask": {0: "batch", 1: "frames"}})


def cast_model(model, dtype: torch.dtype):
    """A copy of `model` with CLIP and the head in `dtype` (the scan's A, D and dt bias stay float32)."""
    m = copy.deepcopy(model)
    m.set_precision(clip_dtype=dtype, head_dtype=dtype)
    return m.eval()


def _set_aot(proto, aot: bool) -> None:
    names = {c.name for c in CONTRACTS}
    for n in proto.graph.node:
        if n.domain == BI_SELECTIVE_SCAN.domain and n.op_type in names:
            for a in n.attribute:
                if a.name == ATTR_AOT:
                    a.i = int(aot)


def custom_nodes(proto) -> list[dict[str, Any]]:
    """The custom nodes of a model: op type, domain, attributes (for the sidecar)."""
    from onnx import helper

    out = []
    for n in proto.graph.node:
        if n.domain not in ("", "ai.onnx"):
            out.append({"name": n.name, "op_type": n.op_type, "domain": n.domain, "inputs": len(n.input),
                        "attributes": {a.name: _plain(helper.get_attribute_value(a)) for a in n.attribute}})
    return out


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _io_table(values) -> list[dict[str, Any]]:
    from onnx import helper

    rows = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        rows.append({"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims})
    return rows


def check(proto) -> None:
    """onnx.checker with full_check (types and shapes inferred through the custom schemas)."""
    import onnx

    register_onnx_schemas()
    onnx.checker.check_model(proto, full_check=True)


def export_part(model, part: str, out_dir: str | Path, dtype: str = "float32",
                variants: tuple[str, ...] = VARIANTS, opset: int = DEFAULT_OPSET, pyramid: str = "decomposed",
                aot: bool = True, log=print, fingerprint: str | None = None) -> list[ExportedFile]:
    """Export one part of `model` in `dtype` as the given variants; check every file; write sidecars.
    `fingerprint` (gallery.model_fingerprint of the uncast model) goes into each sidecar so that
    `compare` can tell whether a directory was exported from the model it is given."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variants {bad}; choose from {VARIANTS}")
    if opset < 18:
        raise ValueError(f"opset {opset} is too old; use 18 or newer")
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tdtype = DTYPES[dtype]
    m = cast_model(model, tdtype)
    graph = build_graph(m, part, pyramid)
    inputs = example_inputs(m.config, part, tdtype)
    dyn, dyn_names = _dynamic_shapes(part)
    t0 = time.perf_counter()
    base = _torch_export(graph, tuple(inputs.values()), list(inputs), ["embedding"], dyn, opset)
    log(f"exported {part} {dtype} from PyTorch in {time.perf_counter() - t0:.1f}s")

    functions = []
    used = {n.op_type for n in base.graph.node if n.domain == BI_SELECTIVE_SCAN.domain}
    if BI_SELECTIVE_SCAN.name in used:
        functions.append(bi_selective_scan_function(opset))
    if PYRAMID_SEQUENCE.name in used:
        fn, _ = pyramid_sequence_function(graph if part == "head" else graph.head, tdtype, opset)
        functions.append(fn)

    results = []
    todo = [("plain", False)] if not used else [(v, v != "portable" and aot) for v in variants]
    for variant, variant_aot in todo:
        proto = copy.deepcopy(base)
        _set_aot(proto, variant_aot)
        del proto.functions[:]
        if variant in ("plugin", "portable"):
            proto.functions.extend(functions)
        proto.producer_name = "muse-tvr"
        check(proto)
        stem = f"{part}.{dtype}" if variant == "plain" else f"{part}.{variant}.{dtype}"
        path = out_dir / f"{stem}.onnx"
        onnx.save(proto, str(path))
        sidecar = out_dir / f"{stem}.json"
        meta = {
            "file": path.name, "part": part, "variant": variant, "dtype": dtype, "opset": opset,
            "model": m.config.name, "config": m.config.to_dict(), "weights": dict(model.weight_sources),
            "model_fingerprint": fingerprint,
            "pyramid": pyramid if part != "text" else None,
            "inputs": _io_table(proto.graph.input), "outputs": _io_table(proto.graph.output),
            "dynamic_axes": dyn_names,
            "custom_nodes": custom_nodes(proto),
            "local_functions": [f"{f.domain}::{f.name}" for f in proto.functions],
            "custom_ops": [r for r in contract_table() if r["op_type"] in used],
        }
        sidecar.write_text(json.dumps(meta, indent=2))
        log(f"  wrote {path} ({path.stat().st_size / 1e6:.1f} MB), checked with full_check")
        results.append(ExportedFile(part, variant, dtype, path, sidecar))
    return results


def export_all(model, out_dir: str | Path, parts=PARTS, dtypes=("float32",), variants=VARIANTS,
               opset: int = DEFAULT_OPSET, pyramid: str = "decomposed", aot: bool = True, log=print,
               fingerprint: str | None = None) -> list[ExportedFile]:
    if fingerprint is None:
        from ..engine.gallery import model_fingerprint
        fingerprint = model_fingerprint(model)
    files = []
    for part in parts:
        for dt in dtypes:
            files += export_part(model, part, out_dir, dt, variants, opset, pyramid, aot, log, fingerprint)
    return files
