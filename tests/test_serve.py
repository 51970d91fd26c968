"""`muse-tvr serve` as a user runs it: a real tritonserver (PyTriton's) started by the CLI on free
localhost ports, queried with tritonclient over HTTP and gRPC, compared with the engine in this process,
then stopped with SIGTERM. One server for the module (tiny preset, random weights, seed 0)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from muse_tvr.commands import build_model, encode_into_gallery  # noqa: E402
from muse_tvr.serve.client import captions_tensor, video_bytes_tensor, video_tensors  # noqa: E402
from serve_helpers import descendants, free_ports, stop_tree, wait_ready  # noqa: E402

SPEC = {"backbone": "tiny", "seed": 0}
START_TIMEOUT_S = 240  # model build, the C++ scan build on a fresh machine, four Python-backend stubs
ATOL = 2e-5  # the same model and CPU; batches of different sizes may round differently


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from test_video import make_clip

    root = tmp_path_factory.mktemp("serve")
    clips = []
    for i, seconds in enumerate((1.2, 3.0, 5.0)):
        p = root / f"clip{i}.mp4"
        make_clip(p, seconds, 25, seed=i)
        clips.append(p)
    model, info = build_model(SPEC)
    encode_into_gallery(model, info, clips, root / "gallery", batch_size=2, workers=0, progress=False)
    http, grpc, metrics = free_ports(3)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from muse_tvr.cli import main; raise SystemExit(main())", "serve",
         "--backbone", "tiny", "--seed", "0", "--gallery", str(root / "gallery"), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)], stdout=log, stderr=subprocess.STDOUT)
    client = httpclient.InferenceServerClient(f"localhost:{http}")
    try:
        wait_ready(proc, client, ("muse_text", "muse_video", "muse_video_bytes", "muse_search"),
                   root / "server.log", START_TIMEOUT_S)
        from muse_tvr.engine.gallery import Gallery
        yield {"proc": proc, "http": f"localhost:{http}", "grpc": f"localhost:{grpc}", "model": model,
               "clips": clips, "gallery": Gallery.open(root / "gallery"), "log": root / "server.log"}
    finally:
        client.close()
        if proc.poll() is None:  # the last test stops it; this is for a failure before that
            stop_tree(proc)
        log.close()


def _http_text(url, captions):
    with httpclient.InferenceServerClient(url) as c:
        x = httpclient.InferInput("text", [len(captions), 1], "BYTES")
        x.set_data_from_numpy(captions_tensor(captions))
        return c.infer("muse_text", [x]).as_numpy("embedding")


def _grpc_text(url, captions):
    with grpcclient.InferenceServerClient(url) as c:
        x = grpcclient.InferInput("text", [len(captions), 1], "BYTES")
        x.set_data_from_numpy(captions_tensor(captions))
        return c.infer("muse_text", [x]).as_numpy("embedding")


def _engine_text(model, captions):
    from muse_tvr.engine.tokenizer import ClipTokenizer
    return model.encode_text(ClipTokenizer()(captions, model.config.max_words)).numpy()


def test_text_over_http_and_grpc_equals_engine(served):
    captions = ["a dog runs on the beach", "two people are cooking", "a man plays guitar"]
    want = _engine_text(served["model"], captions)
    got_http = _http_text(served["http"], captions)
    got_grpc = _grpc_text(served["grpc"], captions)
    assert got_http.shape == got_grpc.shape == (3, served["model"].config.embed_dim)
    assert got_http.dtype == np.float32
    np.testing.assert_allclose(got_http, want, atol=ATOL)
    np.testing.assert_allclose(got_grpc, want, atol=ATOL)


def test_config_names_dims_and_batching(served):
    cfg = served["model"].config
    with httpclient.InferenceServerClient(served["http"]) as c:
        video = c.get_model_config("muse_video")
        text = c.get_model_config("muse_text")
        search = c.get_model_config("muse_search")
    assert video["max_batch_size"] == 16 and "dynamic_batching" in video and "dynamic_batching" in text
    dims = {i["name"]: [int(d) for d in i["dims"]] for i in video["input"]}
    s = cfg.vision.image_size
    assert dims == {"frames": [cfg.max_frames, 3, s, s], "mask": [cfg.max_frames]}
    assert [(o["name"], o["data_type"]) for o in text["output"]] == [("embedding", "TYPE_FP32")]
    assert search["max_batch_size"] == 1 and "dynamic_batching" not in search


def test_video_frames_and_bytes_equal_engine_and_gallery(served):
    import torch

    model, clip = served["model"], served["clips"][1]
    cfg = model.config
    frames, mask = video_tensors(str(clip), cfg.vision.image_size, cfg.max_frames)
    want = model.encode_video(torch.from_numpy(frames), torch.from_numpy(mask)).numpy()
    with grpcclient.InferenceServerClient(served["grpc"]) as c:
        f = grpcclient.InferInput("frames", list(frames.shape), "FP32")
        f.set_data_from_numpy(frames)
        m = grpcclient.InferInput("mask", list(mask.shape), "FP32")
        m.set_data_from_numpy(mask)
        got = c.infer("muse_video", [f, m]).as_numpy("embedding")
    np.testing.assert_allclose(got, want, atol=ATOL)
    with httpclient.InferenceServerClient(served["http"]) as c:
        v = httpclient.InferInput("video", [2, 1], "BYTES")
        v.set_data_from_numpy(video_bytes_tensor(served["clips"][:2]))
        from_bytes = c.infer("muse_video_bytes", [v]).as_numpy("embedding")
    gallery = served["gallery"]
    rows = {e["path"]: i for i, e in enumerate(gallery.entries())}
    encoded = gallery.embeddings([rows[str(Path(p).resolve())] for p in served["clips"][:2]])
    np.testing.assert_allclose(from_bytes, encoded, atol=ATOL)  # what `muse-tvr encode` stored
    np.testing.assert_allclose(from_bytes[1], want[0], atol=ATOL)


def test_search_equals_search_gallery(served):
    from muse_tvr.engine.jobs import search_gallery

    query, k = "a colourful pattern", 2
    want = search_gallery(served["model"], served["gallery"], [query], k)[0]
    with httpclient.InferenceServerClient(served["http"]) as c:
        t = httpclient.InferInput("text", [1, 1], "BYTES")
        t.set_data_from_numpy(captions_tensor([query]))
        kk = httpclient.InferInput("k", [1, 1], "INT32")
        kk.set_data_from_numpy(np.array([[k]], np.int32))
        r = c.infer("muse_search", [t, kk])
    keys, scores = r.as_numpy("keys"), r.as_numpy("scores")
    assert keys.shape == scores.shape == (1, k)
    assert [x.decode() for x in keys[0]] == [h["path"] for h in want]
    np.testing.assert_allclose(scores[0], [h["score"] for h in want], atol=1e-5)


def _expect_error(call, *phrases):
    with pytest.raises(InferenceServerException) as e:
        call()
    text = str(e.value)
    for p in phrases:
        assert p in text, text[-500:]


def test_bad_requests_get_errors_and_server_keeps_serving(served, tmp_path):
    cfg = served["model"].config
    s, t = cfg.vision.image_size, cfg.max_frames
    c = httpclient.InferenceServerClient(served["http"])

    def infer(model, **arrays):
        dtypes = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int32): "INT32",
                  np.dtype(object): "BYTES"}
        ins = []
        for name, a in arrays.items():
            x = httpclient.InferInput(name, list(a.shape), dtypes[a.dtype])
            x.set_data_from_numpy(a)
            ins.append(x)
        return c.infer(model, ins)

    ok_frames, ok_mask = np.zeros((1, t, 3, s, s), np.float32), np.ones((1, t), np.float32)
    _expect_error(lambda: infer("muse_text", text=captions_tensor([""])), "request 0: text[0] is empty")
    _expect_error(lambda: infer("muse_text", text=captions_tensor(["   "])), "is empty")
    _expect_error(lambda: infer("muse_video", frames=ok_frames.astype(np.float64), mask=ok_mask),
                  "frames", "FP64")  # Triton's own dtype check
    _expect_error(lambda: infer("muse_video", frames=ok_frames[:, :1], mask=ok_mask),
                  "unexpected shape for input 'frames'")
    _expect_error(lambda: infer("muse_video", frames=ok_frames, mask=np.zeros((1, t), np.float32)),
                  "mask row 0 has no real frame")
    _expect_error(lambda: infer("muse_video", frames=ok_frames, mask=np.full((1, t), 0.5, np.float32)),
                  "mask values must be 0")
    _expect_error(lambda: infer("muse_video_bytes", video=np.array([[b"not a video"]], dtype=object)),
                  "request 0: video[0]: cannot open")
    for k in (0, -3):
        _expect_error(lambda: infer("muse_search", text=captions_tensor(["a dog"]), k=np.array([[k]], np.int32)),
                      f"k must be >= 1, got {k}")
    _expect_error(lambda: infer("muse_search", text=captions_tensor(["a", "b"]), k=np.array([[1], [1]], np.int32)),
                  "batch")  # max_batch_size 1: Triton refuses a batch of two
    # still serving, and with the right answers
    got = infer("muse_text", text=captions_tensor(["a dog"])).as_numpy("embedding")
    np.testing.assert_allclose(got, _engine_text(served["model"], ["a dog"]), atol=ATOL)
    got = infer("muse_video", frames=ok_frames, mask=ok_mask).as_numpy("embedding")
    assert got.shape == (1, cfg.embed_dim) and np.isfinite(got).all()
    c.close()


def test_16_concurrent_clients(served):
    captions = [f"video number {i} shows {w}" for i, w in enumerate(
        "dogs cats cars boats trains planes birds fish trees roads rivers hills cups books shoes hats".split())]
    want = _engine_text(served["model"], captions)

    def one(i):
        if i % 2:
            return _grpc_text(served["grpc"], [captions[i]])[0]
        return _http_text(served["http"], [captions[i]])[0]

    with ThreadPoolExecutor(16) as pool:
        got = np.stack(list(pool.map(one, range(16))))
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_sigterm_stops_cleanly(served):
    """Last in the module: SIGTERM with 16 clients' requests in flight stops serve with exit code 0 and
    leaves no tritonserver or stub (tritonserver 2.51 has segfaulted here while stopping, leaving its
    stubs to init; serve kills those)."""
    import threading

    proc = served["proc"]
    family = descendants(proc.pid)
    names = {(Path(f"/proc/{p}/comm").read_text().strip() if Path(f"/proc/{p}").exists() else "") for p in family}
    assert any("tritonserver" in n for n in names), names  # the check below looks at real processes
    cfg = served["model"].config
    frames = np.zeros((1, cfg.max_frames, 3, cfg.vision.image_size, cfg.vision.image_size), np.float32)
    sent = threading.Barrier(17)

    def keep_sending():
        c = httpclient.InferenceServerClient(served["http"], network_timeout=60)
        f = httpclient.InferInput("frames", list(frames.shape), "FP32")
        f.set_data_from_numpy(frames)
        m = httpclient.InferInput("mask", [1, cfg.max_frames], "FP32")
        m.set_data_from_numpy(np.ones((1, cfg.max_frames), np.float32))
        sent.wait()
        for _ in range(100):
            try:
                c.infer("muse_video", [f, m])
            except Exception:  # the server went away: what this test does
                return

    clients = [threading.Thread(target=keep_sending, daemon=True) for _ in range(16)]
    for t in clients:
        t.start()
    sent.wait()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("serve did not stop within 60 s of SIGTERM")
    assert rc == 0, served["log"].read_text()[-2000:]
    time.sleep(1)
    alive = [p for p in family if Path(f"/proc/{p}").exists() and
             "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert not alive, f"left running: {alive}"
    leaked = list(Path("/dev/shm").glob(f"pytrtion{proc.pid}-*"))
    assert not leaked, f"shared memory left: {leaked}"
