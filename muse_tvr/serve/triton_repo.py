"""A Triton model repository for a production tritonserver (GPU or CPU), written from one MuseModel.

  REPO/
    muse_text/         onnxruntime  ids INT64 [batch, W]                       -> embedding FP32 [batch, D]
    muse_video/        onnxruntime  frames FP32 [batch, T, 3, S, S], mask FP32 [batch, T] -> embedding
                       (op-library variant: model_operations { op_library_filename } loads the C++ scan
                       library copied beside it; portable variant: ORT inlines the scan's function body)
    muse_video_trt/    tensorrt_plan, the same inputs/outputs (only when a plan is given)
    muse_tokenizer/    python  text BYTES [batch, 1]  -> ids INT64 [batch, W]   (muse_tvr.engine.tokenizer)
    muse_video_decode/ python  video BYTES [batch, 1] -> frames, mask       (muse_tvr.engine.video, as encode)
    muse_text_bytes/   ensemble muse_tokenizer -> muse_text:          text BYTES  -> embedding
    muse_video_bytes/  ensemble muse_video_decode -> muse_video:      video BYTES -> embedding

W = max_words (32), T = max_frames, S = image_size, D = embed_dim of the model. Frames are fixed at T per
model (the exported graph accepts any count; Triton's dynamic batcher needs equal shapes to stack). The
Python models import muse_tvr's numpy-only modules: the server's Python environment needs
`pip install --no-deps muse-tvr` plus ftfy, regex, tokenizers, pillow, av (docs/serving.md).

`muse-tvr serve` (server.py) serves text BYTES under the name muse_text; in this repository muse_text is the
ONNX graph on token ids and muse_text_bytes takes the caption, so every ONNX model stays a plain
onnxruntime model.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

KINDS = ("cpu", "gpu")
VIDEO_VARIANTS = ("oplib", "portable")
OP_LIBRARY_NAME = "libmuse_ort_ops.so"


@dataclass(frozen=True)
class RepoOptions:
    max_batch_size: int = 16
    kind: str = "cpu"  # instance_group kind: KIND_CPU or KIND_GPU
    instances: int = 1  # instance_group count per model
    video_variant: str = "oplib"
    queue_delay_us: int = 2000
    # the repository's path as the server will see it (op_library_filename is dlopen'ed by tritonserver,
    # so it must be absolute there: e.g. /models when the folder is mounted with docker -v REPO:/models)
    server_path: str | None = None


def _dims(values) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _io(inputs, outputs) -> str:
    """input/output blocks: each a list of (name, TYPE_X, dims)."""
    def block(kind, items):
        body = ",\n".join(f'  {{\n    name: "{n}"\n    data_type: {t}\n    dims: {_dims(d)}\n  }}'
                          for n, t, d in items)
        return f"{kind} [\n{body}\n]\n"
    return block("input", inputs) + block("output", outputs)


def _batching(o: RepoOptions) -> str:
    return f"dynamic_batching {{\n  max_queue_delay_microseconds: {o.queue_delay_us}\n}}\n"


def _instances(o: RepoOptions, kind: str | None = None) -> str:
    k = (kind or o.kind).upper()
    return f"instance_group [\n  {{\n    count: {o.instances}\n    kind: KIND_{k}\n  }}\n]\n"


def _header(name: str, backend_or_platform: str, max_batch: int) -> str:
    return f'name: "{name}"\n{backend_or_platform}\nmax_batch_size: {max_batch}\n'


# Python-backend models: a thin Triton wrapper; the work is the numpy-only function it calls, which
# `muse-tvr serve` and the tests call too.
_PY_MODEL = '''"""Triton Python-backend model written by `muse-tvr export triton-repo`: {what}."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from muse_tvr.serve.client import {function}


class TritonPythonModel:
    def initialize(self, args):
        self.params = json.loads(args["model_config"])["parameters"]
        self.p = {{k: int(v["string_value"]) for k, v in self.params.items()}}

    def execute(self, requests):
        responses = []
        for request in requests:  # one response per request, so a bad request fails only itself
            try:
                x = pb_utils.get_input_tensor_by_name(request, "{input}").as_numpy()
                outputs = {function}(x, **self.p)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name, value) for name, value in outputs.items()]))
            except ValueError as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
'''


def _parameters(values: dict) -> str:
    return "".join(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}\n'
                   for k, v in values.items())


def _ensemble(name: str, max_batch: int, inputs, outputs, steps) -> str:
    """steps: (model, {model input: ensemble tensor}, {model output: ensemble tensor})."""
    text = _header(name, 'platform: "ensemble"', max_batch) + _io(inputs, outputs)
    body = []
    for model, in_map, out_map in steps:
        maps = "".join(f'      input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in in_map.items())
        maps += "".join(f'      output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in out_map.items())
        body.append(f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}')
    return text + "ensemble_scheduling {\n  step [\n" + ",\n".join(body) + "\n  ]\n}\n"


def _write(repo: Path, name: str, config: str, files: dict[str, Path | str]) -> None:
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(config)
    for rel, src in files.items():
        dst = d / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copyfile(src, dst)
        else:
            dst.write_text(src)


def export_triton_repo(model, out: str | Path, options: RepoOptions = RepoOptions(), plan: str | Path | None = None,
                       op_library: str | Path | None = None, opset: int | None = None, log=print,
                       fingerprint: str | None = None) -> list[str]:
    """Export `model`'s text and video graphs (float32) and write the repository; returns the model names.
    The op-library variant needs the built library (`make -C cpp`, or `op_library`)."""
    import tempfile

    from ..export.onnx_export import DEFAULT_OPSET, export_part
    from ..export.ort_runner import find_op_library

    if options.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {options.kind!r}")
    if options.video_variant not in VIDEO_VARIANTS:
        raise ValueError(f"video variant must be one of {VIDEO_VARIANTS}, got {options.video_variant!r}")
    if options.max_batch_size < 1 or options.instances < 1:
        raise ValueError("max_batch_size and instances must be >= 1")
    if plan is not None and not Path(plan).is_file():
        raise ValueError(f"--plan {plan}: no such file (build one with `muse-tvr build-engine`)")
    lib = find_op_library(op_library) if options.video_variant == "oplib" else None
    repo = Path(out)
    if repo.exists() and any(repo.iterdir()):
        raise ValueError(f"--out {repo} is not empty: give a new folder for the repository")
    repo.mkdir(parents=True, exist_ok=True)
    server_repo = options.server_path or str(repo.resolve())
    cfg = model.config
    w, t, s, d = cfg.max_words, cfg.max_frames, cfg.vision.image_size, cfg.embed_dim
    mb = options.max_batch_size
    frames_in = [("frames", "TYPE_FP32", [t, 3, s, s]), ("mask", "TYPE_FP32", [t])]
    embedding = [("embedding", "TYPE_FP32", [d])]

    with tempfile.TemporaryDirectory() as tmp:
        text_file = export_part(model, "text", tmp, "float32", opset=opset or DEFAULT_OPSET, log=log,
                                fingerprint=fingerprint)[0]
        # plugin-nofunc has only the custom node, so a missing library fails at load instead of silently
        # running the slow inlined body
        vv = "plugin-nofunc" if options.video_variant == "oplib" else "portable"
        video_file = export_part(model, "video", tmp, "float32", variants=(vv,), opset=opset or DEFAULT_OPSET,
                                 log=log, fingerprint=fingerprint)[0]
        _write(repo, "muse_text", _header("muse_text", 'backend: "onnxruntime"', mb)
               + _io([("ids", "TYPE_INT64", [w])], embedding) + _batching(options) + _instances(options),
               {"1/model.onnx": Path(text_file.path), "export.json": Path(text_file.sidecar)})
        video_cfg = (_header("muse_video", 'backend: "onnxruntime"', mb) + _io(frames_in, embedding)
                     + _batching(options) + _instances(options))
        files = {"1/model.onnx": Path(video_file.path), "export.json": Path(video_file.sidecar)}
        if lib is not None:
            lib_path = f"{server_repo}/muse_video/{OP_LIBRARY_NAME}"
            video_cfg += f'model_operations {{\n  op_library_filename: "{lib_path}"\n}}\n'
            files[OP_LIBRARY_NAME] = Path(lib)
        _write(repo, "muse_video", video_cfg, files)
    names = ["muse_text", "muse_video"]
    if plan is not None:
        # A plan is built for one GPU model and TensorRT version; its optimisation profile must cover
        # [1, max_batch_size] (muse-tvr build-engine --batch 1,OPT,MAX).
        _write(repo, "muse_video_trt", _header("muse_video_trt", 'platform: "tensorrt_plan"', mb)
               + _io(frames_in, embedding) + _batching(options) + _instances(options, "gpu"),
               {"1/model.plan": Path(plan)})
        names.append("muse_video_trt")
    py = _instances(options, "cpu")  # tokenizing and decoding run on the CPU either way
    _write(repo, "muse_tokenizer", _header("muse_tokenizer", 'backend: "python"', mb)
           + _io([("text", "TYPE_STRING", [1])], [("ids", "TYPE_INT64", [w])]) + _batching(options) + py
           + _parameters({"max_words": w}),
           {"1/model.py": _PY_MODEL.format(what="captions -> CLIP token ids", function="tokenize_captions",
                                           input="text")})
    _write(repo, "muse_video_decode", _header("muse_video_decode", 'backend: "python"', mb)
           + _io([("video", "TYPE_STRING", [1])], frames_in) + _batching(options) + py
           + _parameters({"size": s, "max_frames": t}),
           {"1/model.py": _PY_MODEL.format(what="video file bytes -> frames, mask", function="decode_videos",
                                           input="video")})
    _write(repo, "muse_text_bytes", _ensemble("muse_text_bytes", mb, [("text", "TYPE_STRING", [1])], embedding,
                                              [("muse_tokenizer", {"text": "text"}, {"ids": "ids"}),
                                               ("muse_text", {"ids": "ids"}, {"embedding": "embedding"})]), {})
    _write(repo, "muse_video_bytes", _ensemble("muse_video_bytes", mb, [("video", "TYPE_STRING", [1])], embedding,
                                               [("muse_video_decode", {"video": "video"},
                                                 {"frames": "frames", "mask": "mask"}),
                                                ("muse_video", {"frames": "frames", "mask": "mask"},
                                                 {"embedding": "embedding"})]), {})
    names += ["muse_tokenizer", "muse_video_decode", "muse_text_bytes", "muse_video_bytes"]
    return names
