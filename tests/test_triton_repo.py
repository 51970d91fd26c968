"""`export_triton_repo`: every config.pbtxt parses with Triton's own model-config schema (tritonclient's
model_config_pb2, strict text format), names/dtypes/dims agree with the exported graphs and across
ensemble steps, and each ONNX model runs in ONNX Runtime with the settings its config names (op library,
CPU instance, a full max_batch_size batch) and gives the engine's embeddings. Tiny preset, random weights.

The Python-backend models (tokenizer, video decode) also run on PyTriton's bundled tritonserver 2.51,
queried with tritonclient. Not covered: a tritonserver with the onnxruntime/tensorrt backends (the bundled
one has neither; docs/serving.md says what was verified where); the TensorRT plan below is a placeholder
file, used only to check its config."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

text_format = pytest.importorskip("google.protobuf.text_format")
mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
ort = pytest.importorskip("onnxruntime")

from muse_tvr.commands import build_model  # noqa: E402
from muse_tvr.serve import client  # noqa: E402
from muse_tvr.serve.triton_repo import RepoOptions, export_triton_repo  # noqa: E402

MAX_BATCH = 3
ORT_TYPES = {"tensor(float)": mc.TYPE_FP32, "tensor(int64)": mc.TYPE_INT64}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from onnx_helpers import built_cpp

    root = tmp_path_factory.mktemp("triton")
    model, info = build_model({"backbone": "tiny", "seed": 0})
    plan = root / "video.plan"
    plan.write_bytes(b"placeholder, not a TensorRT plan")
    names = export_triton_repo(model, root / "repo", RepoOptions(max_batch_size=MAX_BATCH, instances=2),
                               plan=plan, op_library=built_cpp() / "libmuse_ort_ops.so", log=lambda m: None,
                               fingerprint=info["fingerprint"])
    return {"root": root / "repo", "names": names, "model": model}


def load_config(path: Path):
    cfg = mc.ModelConfig()
    text_format.Parse(path.read_text(), cfg)  # unknown fields or bad enum values raise ParseError
    return cfg


def configs(repo) -> dict:
    return {d.name: load_config(d / "config.pbtxt") for d in sorted(repo["root"].iterdir()) if d.is_dir()}


def test_every_config_parses_and_names_its_files(repo):
    cfgs = configs(repo)
    assert sorted(cfgs) == sorted(repo["names"]) == sorted(
        ["muse_text", "muse_video", "muse_video_trt", "muse_tokenizer", "muse_video_decode", "muse_text_bytes",
         "muse_video_bytes"])
    files = {"onnxruntime": "model.onnx", "python": "model.py"}
    for name, cfg in cfgs.items():
        assert cfg.name == name and cfg.max_batch_size == MAX_BATCH
        if cfg.platform == "ensemble":
            assert cfg.ensemble_scheduling.step and not cfg.HasField("dynamic_batching")
            continue
        want = "model.plan" if cfg.platform == "tensorrt_plan" else files[cfg.backend]
        assert (repo["root"] / name / "1" / want).is_file(), name
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds > 0
        (group,) = cfg.instance_group
        assert group.count == 2
        assert group.kind == (mc.ModelInstanceGroup.KIND_GPU if cfg.platform == "tensorrt_plan"
                              else mc.ModelInstanceGroup.KIND_CPU)
    video = cfgs["muse_video"]
    (lib,) = video.model_operations.op_library_filename
    assert Path(lib).is_absolute() and Path(lib).is_file() and Path(lib).parent == repo["root"] / "muse_video"
    strip = [(t.name, t.data_type, list(t.dims)) for t in video.input]
    assert [(t.name, t.data_type, list(t.dims)) for t in cfgs["muse_video_trt"].input] == strip


def test_ensemble_steps_connect_matching_tensors(repo):
    cfgs = configs(repo)
    for name in ("muse_text_bytes", "muse_video_bytes"):
        ens = cfgs[name]
        known = {t.name: (t.data_type, list(t.dims)) for t in ens.input}
        for step in ens.ensemble_scheduling.step:
            target = cfgs[step.model_name]
            inputs = {t.name: (t.data_type, list(t.dims)) for t in target.input}
            outputs = {t.name: (t.data_type, list(t.dims)) for t in target.output}
            assert set(step.input_map) == set(inputs), (name, step.model_name)
            for key, tensor in step.input_map.items():
                assert known[tensor] == inputs[key], (name, step.model_name, key)
            for key, tensor in step.output_map.items():
                known[tensor] = outputs[key]
        for out in ens.output:
            assert known[out.name] == (out.data_type, list(out.dims)), name


def session_from_config(cfg, model_dir: Path):
    """An ORT session set up as Triton's onnxruntime backend would from `cfg` (CPU instances)."""
    assert cfg.backend == "onnxruntime"
    so = ort.SessionOptions()
    for lib in cfg.model_operations.op_library_filename:
        so.register_custom_ops_library(lib)
    assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in cfg.instance_group)
    return ort.InferenceSession(str(model_dir / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])


def check_io_matches(cfg, sess):
    for declared, actual in ((cfg.input, sess.get_inputs()), (cfg.output, sess.get_outputs())):
        assert [t.name for t in declared] == [a.name for a in actual]
        for t, a in zip(declared, actual):
            assert ORT_TYPES[a.type] == t.data_type, t.name
            assert len(a.shape) == 1 + len(t.dims), t.name  # batch dimension first
            for graph_dim, dim in zip(a.shape[1:], t.dims):
                assert isinstance(graph_dim, str) or graph_dim == dim, (t.name, a.shape, list(t.dims))


def test_onnx_models_run_with_their_configs_and_match_engine(repo):
    from test_video import make_clip

    cfgs, model = configs(repo), repo["model"]
    cfg = model.config
    text_cfg, video_cfg = cfgs["muse_text"], cfgs["muse_video"]
    text_sess = session_from_config(text_cfg, repo["root"] / "muse_text")
    video_sess = session_from_config(video_cfg, repo["root"] / "muse_video")
    check_io_matches(text_cfg, text_sess)
    check_io_matches(video_cfg, video_sess)

    captions = ["a dog on a beach", "someone cooks pasta", "a red car"][:MAX_BATCH]
    ids = client.tokenize_captions(client.captions_tensor(captions), cfg.max_words)["ids"]
    (got,) = text_sess.run(None, {"ids": ids})
    want = model.encode_text(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)

    frames, masks = [], []
    for i in range(MAX_BATCH):
        p = repo["root"].parent / f"clip{i}.mp4"
        make_clip(p, 1.5 + 2 * i, 25, seed=i)
        decoded = client.decode_videos(client.video_bytes_tensor([p]), cfg.vision.image_size, cfg.max_frames)
        frames.append(decoded["frames"])
        masks.append(decoded["mask"])
    frames, mask = np.concatenate(frames), np.concatenate(masks)
    assert list(frames.shape[1:]) == list(video_cfg.input[0].dims)
    assert mask.sum(1).min() < cfg.max_frames  # a padded row, so the mask matters
    (got,) = video_sess.run(None, {"frames": frames, "mask": mask})
    want = model.encode_video(torch.from_numpy(frames), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_python_models_call_the_client_functions_with_their_parameters(repo):
    cfgs = configs(repo)
    for name, function, outputs in (("muse_tokenizer", client.tokenize_captions, {"ids"}),
                                    ("muse_video_decode", client.decode_videos, {"frames", "mask"})):
        cfg = cfgs[name]
        source = (repo["root"] / name / "1" / "model.py").read_text()
        compile(source, f"{name}/model.py", "exec")
        assert f"from muse_tvr.serve.client import {function.__name__}" in source
        params = set(inspect.signature(function).parameters)
        (first,) = [t.name for t in cfg.input]
        assert params == {first, *cfg.parameters}, name  # model.py passes the config's parameters by name
        assert {t.name for t in cfg.output} == outputs
    with pytest.raises(ValueError, match=r"text\[1\] is empty"):
        client.tokenize_captions(client.captions_tensor(["fine", " "]), 32)
    with pytest.raises(ValueError, match=r"video\[0\]: .*cannot open"):
        client.decode_videos(np.array([[b"junk"]], dtype=object), 32, 4)


def test_python_models_on_bundled_tritonserver(repo, tmp_path):
    """The generated model.py files and configs loaded by a real tritonserver: ids and frames equal the
    engine's; a bad request gets an error naming the problem and the server keeps serving."""
    import shutil

    httpclient = pytest.importorskip("tritonclient.http")
    pytest.importorskip("pytriton")
    from serve_helpers import free_ports, stop_tree, wait_ready
    from test_video import make_clip
    from tritonclient.utils import InferenceServerException

    from muse_tvr.engine.tokenizer import ClipTokenizer
    from muse_tvr.engine.video import load_video
    from muse_tvr.serve.bundled import start_bundled_tritonserver

    sub = tmp_path / "python-models"  # the ONNX models and ensembles need backends the bundled server lacks
    for name in ("muse_tokenizer", "muse_video_decode"):
        shutil.copytree(repo["root"] / name, sub / name)
    http, grpc, metrics = free_ports(3)
    log_path = tmp_path / "tritonserver.log"
    with open(log_path, "w") as log:
        proc = start_bundled_tritonserver(sub, tmp_path / "work", http, grpc, metrics, log=log)
        c = httpclient.InferenceServerClient(f"localhost:{http}")
        try:
            wait_ready(proc, c, ("muse_tokenizer", "muse_video_decode"), log_path, 120)
            cfg = repo["model"].config
            x = httpclient.InferInput("text", [2, 1], "BYTES")
            x.set_data_from_numpy(client.captions_tensor(["a dog on a beach", "Two &amp; PEOPLE"]))
            ids = c.infer("muse_tokenizer", [x]).as_numpy("ids")
            assert np.array_equal(ids, ClipTokenizer().ids_array(["a dog on a beach", "Two &amp; PEOPLE"],
                                                                 cfg.max_words))
            clip = tmp_path / "clip.mp4"
            make_clip(clip, 3.5, 25, seed=5)
            v = httpclient.InferInput("video", [1, 1], "BYTES")
            v.set_data_from_numpy(client.video_bytes_tensor([clip]))
            r = c.infer("muse_video_decode", [v])
            frames, mask = load_video(str(clip), size=cfg.vision.image_size,
                                      max_frames=cfg.max_frames).model_input_array(cfg.max_frames)
            assert np.array_equal(r.as_numpy("frames")[0], frames) and np.array_equal(r.as_numpy("mask")[0], mask)
            bad = httpclient.InferInput("text", [1, 1], "BYTES")
            bad.set_data_from_numpy(client.captions_tensor([""]))
            with pytest.raises(InferenceServerException, match=r"text\[0\] is empty"):
                c.infer("muse_tokenizer", [bad])
            assert c.infer("muse_tokenizer", [x]).as_numpy("ids").shape == (2, cfg.max_words)  # still serving
        finally:
            c.close()
            stop_tree(proc)
