"""Build a TensorRT engine plan from an exported MUSE ONNX file (`muse-tvr build-engine`).

What it does, in order:
1. reads the ONNX graph (no weights) and finds the custom `muse` nodes; registers their plugins
   (`tensorrt_plugins.register_plugins`) BEFORE parsing, because TensorRT's ONNX parser looks the plugin
   up by op_type + `plugin_namespace` while it parses;
2. parses the ONNX with `trt.OnnxParser` into a network; for TensorRT >= 11 the network is strongly
   typed (precision comes from the ONNX: build from the float16 export for an fp16 engine); for TensorRT
   10 the precision is a builder flag (`--precision fp16` / `bf16`, default: the ONNX's dtype);
3. one optimisation profile with min/opt/max shapes for every dynamic input (batch and frames);
4. optional timing cache (loaded if the file exists, written back after the build);
5. serialises the plan; optionally writes the engine inspector's layer information as JSON.

The pure-Python parts (ONNX inspection, shape-spec parsing, profile derivation, precision decisions)
import without TensorRT and are tested without it. The TensorRT calls follow the documented Python API
(`tensorrt.Builder`, `OnnxParser`, `IBuilderConfig`, `IEngineInspector`) and have NOT been executed:
the test suite runs where TensorRT cannot be installed (docs/tensorrt.md, "What was verified where").
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..kernels.contracts import (ATTR_AOT, ATTR_PLUGIN_NAMESPACE, ATTR_PLUGIN_VERSION, CONTRACTS,
                                 PYRAMID_SEQUENCE)
from .onnx_export import custom_nodes
from .tensorrt_plugins import import_tensorrt, plugin_signature

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Minimum TensorRT for graphs with custom nodes: AOT plugins (tensorrt.plugin.aot_impl) arrived in 10.9.
MIN_TRT_FOR_PLUGINS = (10, 9)
_ONNX_DTYPE = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}


# ==================================================================================== ONNX facts
@dataclass
class OnnxInput:
    name: str
    dtype: str
    dims: list[Any]  # int for static, str (symbolic name) or None for dynamic


@dataclass
class OnnxFacts:
    """What the builder needs to know about an exported ONNX file."""
    path: Path
    inputs: list[OnnxInput]
    outputs: list[str]
    custom_nodes: list[dict[str, Any]] = field(default_factory=list)
    local_functions: list[str] = field(default_factory=list)
    max_frames: int | None = None  # from the export's JSON sidecar, when there is one

    @property
    def precision(self) -> str:
        """The model's activation dtype: the first floating input that is not float32, else float32."""
        for i in self.inputs:
            if i.dtype in ("float16", "bfloat16"):
                return i.dtype
        return "float32"

    def pyramid_weight_count(self) -> int | None:
        counts = {n["inputs"] - 1 for n in self.custom_nodes if n["op_type"] == PYRAMID_SEQUENCE.name}
        if len(counts) > 1:
            raise ValueError(f"{self.path}: MusePyramidSequence nodes with different weight counts {sorted(counts)}")
        return counts.pop() if counts else None


def read_onnx_facts(path: str | Path) -> OnnxFacts:
    """Inputs (name, dtype, dims), outputs and custom nodes of an ONNX file; raises a clear error for a
    missing or unreadable file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist (export one with `muse-tvr export onnx`)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for corrupt files
        raise ValueError(f"{path} is not a readable ONNX model: {e}") from e
    inits = {i.name for i in proto.graph.initializer}
    inputs = []
    for v in proto.graph.input:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        inputs.append(OnnxInput(v.name, _ONNX_DTYPE.get(t.elem_type, f"onnx-type-{t.elem_type}"), dims))
    names = {c.name for c in CONTRACTS}
    custom = [{**node, "known": node["op_type"] in names} for node in custom_nodes(proto)]
    max_frames = None
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            max_frames = int(json.loads(sidecar.read_text())["config"]["max_frames"])
        except (KeyError, TypeError, ValueError):
            max_frames = None
    return OnnxFacts(path, inputs, [o.name for o in proto.graph.output], custom,
                     [f"{f.domain}::{f.name}" for f in proto.functions], max_frames)


def plugin_problems(facts: OnnxFacts, allow_jit: bool = False) -> list[str]:
    """Why the custom nodes of this file cannot become a Python-free plan (empty = fine)."""
    problems = []
    for n in facts.custom_nodes:
        if not n["known"]:
            problems.append(f"node {n['name']}: unknown custom op {n['domain']}::{n['op_type']} (no plugin)")
            continue
        contract = next(c for c in CONTRACTS if c.name == n["op_type"])
        n_var = n["inputs"] - (len(contract.inputs) - 1) if contract.inputs[-1].variadic else None
        sig = plugin_signature(contract, n_var)
        attrs = n["attributes"]
        if attrs.get(ATTR_PLUGIN_NAMESPACE) != sig.namespace:
            problems.append(f"node {n['name']}: {ATTR_PLUGIN_NAMESPACE} {attrs.get(ATTR_PLUGIN_NAMESPACE)!r}, "
                            f"plugin is {sig.namespace!r}")
        # The parser's own default when a node has no plugin_version is "1".
        if str(attrs.get(ATTR_PLUGIN_VERSION, "1")) != sig.version:
            problems.append(f"node {n['name']}: {ATTR_PLUGIN_VERSION} {attrs.get(ATTR_PLUGIN_VERSION)!r} "
                            f"!= {sig.version!r}")
        if not sig.has_aot and not allow_jit:
            problems.append(
                f"node {n['name']}: {n['op_type']} has no AOT implementation (its fused kernel is several "
                "launches), so a plan with it needs Python + muse_tvr at run time. Export with "
                "`--pyramid decomposed` (TensorRT then runs the pyramid natively), or pass --allow-jit-plugins.")
        elif sig.has_aot and not int(attrs.get(ATTR_AOT, 0)):
            problems.append(f"node {n['name']}: {ATTR_AOT}=0, so TensorRT would use the Python JIT implementation; "
                            "build from the `plugin` or `plugin-nofunc` export (aot=1)")
    return problems


# ============================================================================ shapes and profiles
def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]]:
    """trtexec-style shapes "name:AxBxC,name2:D" -> {name: (A, B, C), name2: (D,)}."""
    out: dict[str, tuple[int, ...]] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise ValueError(f"shape {item!r} must look like name:1x3x224x224")
        try:
            out[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {item!r}: dimensions must be integers separated by 'x'") from None
        if any(d < 1 for d in out[name]):
            raise ValueError(f"shape {item!r}: dimensions must be >= 1")
    return out


def parse_range(text: str | None, what: str) -> tuple[int, int, int] | None:
    """"MIN,OPT,MAX" (or one number for all three) -> (min, opt, max), checked min <= opt <= max."""
    if text is None:
        return None
    parts = [int(p) for p in str(text).split(",")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise ValueError(f"--{what} must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {text!r}")
    return parts[0], parts[1], parts[2]


def derive_profile(facts: OnnxFacts, batch: tuple[int, int, int] = (1, 8, 32),
                   frames: tuple[int, int, int] | None = None,
                   min_shapes: Mapping[str, Sequence[int]] | None = None,
                   opt_shapes: Mapping[str, Sequence[int]] | None = None,
                   max_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple[tuple, tuple, tuple]]:
    """{input: (min, opt, max)} for one optimisation profile.

    Dynamic dims named "batch" take `batch`, those named "frames" take `frames` (default (1, T, T) with T
    the model's frame count if the export recorded it, else (1, 12, 12)); static dims stay. Explicit
    --min/--opt/--max shapes override whole inputs. Every dynamic input must end up with all three."""
    if frames is None:
        t = facts.max_frames or 12
        frames = (1, t, t)
    explicit = [min_shapes or {}, opt_shapes or {}, max_shapes or {}]
    names = {i.name for i in facts.inputs}
    for table in explicit:
        unknown = sorted(set(table) - names)
        if unknown:
            raise ValueError(f"shapes given for unknown inputs {unknown}; the model's inputs are {sorted(names)}")
    profile = {}
    for inp in facts.inputs:
        triple = []
        for k in range(3):
            if inp.name in explicit[k]:
                shape = tuple(int(d) for d in explicit[k][inp.name])
                if len(shape) != len(inp.dims):
                    raise ValueError(f"input {inp.name!r} has rank {len(inp.dims)}, shape {shape} given")
                for d, s in zip(inp.dims, shape):
                    if isinstance(d, int) and d > 0 and d != s:
                        raise ValueError(f"input {inp.name!r}: static dim {d} cannot be {s} (shape {shape})")
            else:
                shape = []
                for j, d in enumerate(inp.dims):
                    if isinstance(d, int) and d > 0:
                        shape.append(d)
                    elif d == "batch" or (d is None and j == 0):
                        shape.append(batch[k])
                    elif d == "frames" or (d is None and j == 1):
                        shape.append(frames[k])
                    else:
                        raise ValueError(f"input {inp.name!r} dim {j} ({d!r}) is dynamic and not batch/frames: "
                                         "give --min/--opt/--max shapes for it")
                shape = tuple(shape)
            triple.append(shape)
        for j in range(len(inp.dims)):
            lo, mid, hi = (t[j] for t in triple)
            if not lo <= mid <= hi:
                raise ValueError(f"input {inp.name!r} dim {j}: need min <= opt <= max, got {lo}, {mid}, {hi}")
        profile[inp.name] = tuple(triple)
    return profile


# ==================================================================================== precision
def trt_version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def precision_settings(trt_version: tuple[int, int], onnx_precision: str, precision: str = "auto") -> dict[str, Any]:
    """How to ask TensorRT for a precision. TensorRT >= 11: networks are strongly typed and the builder
    precision flags are gone, so the ONNX's own dtypes decide; asking for another precision is an error
    that says which export to build from. TensorRT 10: weakly typed by default; `auto` follows the ONNX
    (FP16 flag for a float16 export), fp16/bf16 add the builder flag (fp32 layers may then run in it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    want = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[onnx_precision]
    if trt_version >= (11, 0):
        if precision not in ("auto", want):
            raise ValueError(f"TensorRT {trt_version[0]}.{trt_version[1]} is strongly typed: the engine runs in "
                             f"the ONNX's dtype ({onnx_precision}). For {precision}, build from the "
                             f"{ {'fp32': 'float32', 'fp16': 'float16', 'bf16': 'bfloat16'}[precision] } export "
                             "(`muse-tvr export onnx --dtype ...`).")
        return {"strongly_typed": True, "flags": [], "precision": want}
    chosen = want if precision == "auto" else precision
    flags = {"fp32": [], "fp16": ["FP16"], "bf16": ["BF16"]}[chosen]
    return {"strongly_typed": False, "flags": flags, "precision": chosen}


# ======================================================================================== build
@dataclass
class BuildReport:
    plan: Path
    plan_bytes: int
    seconds: float
    trt_version: str
    precision: dict[str, Any]
    profile: dict[str, Any]
    plugins: list[str]
    layer_info: Path | None = None
    timing_cache: Path | None = None


def build_engine(onnx_path: str | Path, plan_path: str | Path, *, batch: tuple[int, int, int] = (1, 8, 32),
                 frames: tuple[int, int, int] | None = None, min_shapes=None, opt_shapes=None, max_shapes=None,
                 precision: str = "auto", timing_cache: str | Path | None = None,
                 layer_info: str | Path | None = None, workspace_gib: float | None = None,
                 driver_cuda: str | None = None, allow_jit_plugins: bool = False, verbose: bool = False,
                 log=print) -> BuildReport:
    """Build and serialise a TensorRT plan for `onnx_path` (see the module docstring). Needs TensorRT and
    an NVIDIA GPU; without TensorRT it raises ImportError naming what to install."""
    facts = read_onnx_facts(onnx_path)
    problems = plugin_problems(facts, allow_jit_plugins)
    if problems:
        raise ValueError(f"{facts.path} cannot be built into a plan:\n  " + "\n  ".join(problems))
    profile = derive_profile(facts, batch, frames, min_shapes, opt_shapes, max_shapes)
    trt, _ = import_tensorrt()
    version = trt_version_tuple(trt.__version__)
    if facts.custom_nodes and version < MIN_TRT_FOR_PLUGINS:
        raise ImportError(f"TensorRT {trt.__version__} is too old for this model's custom nodes: AOT plugins "
                          f"need TensorRT >= {MIN_TRT_FOR_PLUGINS[0]}.{MIN_TRT_FOR_PLUGINS[1]}")
    prec = precision_settings(version, facts.precision, precision)

    plugins: list[str] = []
    if facts.custom_nodes:
        from .tensorrt_plugins import register_plugins

        plugins = sorted(register_plugins(pyramid_weights=facts.pyramid_weight_count(), driver_cuda=driver_cuda,
                                          with_jit=allow_jit_plugins))

    parse_path = facts.path
    if allow_jit_plugins:
        parse_path = _jit_patched_copy(facts)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    F = trt.NetworkDefinitionCreationFlag
    if prec["strongly_typed"] and hasattr(F, "STRONGLY_TYPED"):
        flags |= 1 << int(F.STRONGLY_TYPED)
    if facts.custom_nodes and hasattr(F, "PREFER_AOT_PYTHON_PLUGINS"):
        # Both implementations are registered when JIT is allowed; AOT must win so the plan is Python-free.
        flags |= 1 << int(F.PREFER_AOT_PYTHON_PLUGINS)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    try:
        parsed = parser.parse_from_file(str(parse_path))
    finally:
        if parse_path != facts.path:
            parse_path.unlink(missing_ok=True)
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {facts.path}:\n  " + "\n  ".join(errors))

    config = builder.create_builder_config()
    for flag in prec["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if layer_info:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    opt_profile = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.items():
        opt_profile.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt_profile)

    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
        log(f"timing cache {cache_path} ({'loaded ' + str(len(blob)) + ' B' if blob else 'new'})")

    log(f"building {facts.path.name} with TensorRT {trt.__version__}, precision {prec['precision']}"
        f"{' (strongly typed)' if prec['strongly_typed'] else ''}, plugins {plugins or 'none'}")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine; rerun with --verbose for the builder log")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(plan))
    seconds = time.perf_counter() - t0

    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    info_path = None
    if layer_info:
        info_path = Path(layer_info)
        write_layer_info(trt, logger, bytes(plan), info_path)
    report = BuildReport(plan_path, plan_path.stat().st_size, seconds, trt.__version__, prec,
                         {k: [list(s) for s in v] for k, v in profile.items()}, plugins, info_path, cache_path)
    log(f"wrote {plan_path} ({report.plan_bytes / 1e6:.1f} MB) in {seconds:.1f}s")
    return report


def _jit_patched_copy(facts: OnnxFacts) -> Path:
    """A copy of the ONNX (beside it, so external weight files still resolve) with aot=0 on nodes whose
    plugin has no AOT implementation: with aot=1 the parser would insist on an AOT plugin."""
    import onnx

    proto = onnx.load(str(facts.path), load_external_data=False)
    changed = False
    for n in proto.graph.node:
        contract = next((c for c in CONTRACTS if c.name == n.op_type and c.domain == n.domain), None)
        if contract is None or plugin_signature(contract, 1).has_aot:
            continue
        for a in n.attribute:
            if a.name == ATTR_AOT and a.i:
                a.i = 0
                changed = True
    if not changed:
        return facts.path
    out = facts.path.with_name(facts.path.stem + ".jit-plugins.onnx")
    onnx.save(proto, str(out))
    return out


def write_layer_info(trt, logger, plan: bytes, path: Path) -> None:
    """The engine inspector's per-layer JSON (layer names, types, tactics, precisions) for `plan`."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("could not deserialise the plan that was just built")
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json.loads(text), indent=2))


def run_plan(plan_path: str | Path, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run a plan once with torch CUDA tensors (Python side of the C++ runner; used by the TensorRT tests).
    inputs: name -> torch tensor on CUDA with the profile's dtype. Returns name -> torch tensor."""
    import torch

    trt, _ = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"could not deserialise {plan_path} (built for another GPU or TensorRT version?)")
    ctx = engine.create_execution_context()
    to_torch = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64,
                trt.int32: torch.int32}
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            if name not in inputs:
                raise ValueError(f"missing input {name!r}")
            t = inputs[name].contiguous()
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(ctx.get_tensor_shape(name))
            out = torch.empty(shape, dtype=to_torch[engine.get_tensor_dtype(name)], device="cuda")
            ctx.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
    stream = torch.cuda.current_stream()
    if not ctx.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return outputs
