"""The engine inside a real Triton server: PyTriton's bundled tritonserver with Python-backend models
that call one MuseModel (the process that runs `muse-tvr serve`).

Models (batch = Triton's batch dimension; D = embed_dim, T = max_frames, S = image_size of the model):

  muse_text         text      BYTES [batch, 1] UTF-8 captions        -> embedding FP32 [batch, D]
  muse_video        frames    FP32  [batch, T, 3, S, S] CLIP-normalised, zero-padded
                    mask      FP32  [batch, T] 1 = real frame         -> embedding FP32 [batch, D]
  muse_video_bytes  video     BYTES [batch, 1] an encoded video file  -> embedding FP32 [batch, D]
                    (decoded and sampled by engine.video.load_video, exactly as `muse-tvr encode`)
  muse_search       text      BYTES [1, 1], k INT32 [1, 1]            -> keys BYTES [1, n], scores FP32 [1, n]
                    (only with a gallery; n = min(k, gallery size); `search_gallery`, as `muse-tvr search`)

Triton checks names, dtypes and dims against the config before a request reaches Python; the checks
here (captions, masks, k, decodable video) raise ValueError with a message naming the request and the
problem, which Triton returns as the request's error. PyTriton reports errors per execute call, so a bad
request that the dynamic batcher merged with others fails those too (their clients see the same message);
the server keeps serving.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from .client import caption_strings, decode_videos, tokenize_captions

MODELS = ("muse_text", "muse_video", "muse_video_bytes", "muse_search")
TRITON_PROCESSES = ("tritonserver", "triton_python_b")  # /proc/PID/comm of the server and its stubs


@dataclass(frozen=True)
class ServeOptions:
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 16
    dynamic_batching: bool = True
    queue_delay_us: int = 2000  # how long Triton waits to fill a batch; 2 ms is small beside a forward
    exit_timeout_s: int = 5  # in-flight requests get this long at shutdown
    shm_mb: int = 64  # each Python model's shared-memory pool: initial size and growth step, MiB


def _per_request(requests, fn):
    """fn(request) for each request, its errors prefixed with the request's index in this batch."""
    out = []
    for r, req in enumerate(requests):
        try:
            out.append(fn(req))
        except ValueError as e:
            raise ValueError(f"request {r}: {e}") from None
    return out


def _split(rows: np.ndarray, counts: list[int], name: str = "embedding") -> list[dict]:
    out, start = [], 0
    for n in counts:
        out.append({name: rows[start:start + n]})
        start += n
    return out


class MuseInference:
    """The infer callables PyTriton calls, each `f(requests) -> responses` (lists of {name: array}, one
    per client request). Independent of PyTriton, so they can be called directly."""

    def __init__(self, model, gallery=None):
        self.model = model
        self.config = model.config
        self.gallery = gallery
        self.frames_shape = (self.config.max_frames, 3, self.config.vision.image_size,
                             self.config.vision.image_size)
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core per call

    def _embed_ids(self, ids: np.ndarray) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            return self.model.encode_text(torch.from_numpy(ids)).float().numpy()

    def _embed_videos(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            return self.model.encode_video(torch.from_numpy(frames), torch.from_numpy(mask)).float().numpy()

    def text(self, requests):
        ids = _per_request(requests, lambda req: tokenize_captions(req["text"], self.config.max_words)["ids"])
        return _split(self._embed_ids(np.concatenate(ids)), [len(i) for i in ids])

    def _check_video(self, req) -> tuple[np.ndarray, np.ndarray]:
        f, m = np.asarray(req["frames"], np.float32), np.asarray(req["mask"], np.float32)
        if f.shape[1:] != self.frames_shape or m.shape != f.shape[:2]:
            raise ValueError(f"frames must be [batch, {', '.join(map(str, self.frames_shape))}] and mask "
                             f"[batch, {self.frames_shape[0]}], got {list(f.shape)} and {list(m.shape)}")
        if not np.isin(m, (0.0, 1.0)).all():
            raise ValueError("mask values must be 0 (padding) or 1 (real frame)")
        empty = np.flatnonzero(m.sum(axis=1) == 0)
        if empty.size:
            raise ValueError(f"mask row {int(empty[0])} has no real frame (all zeros)")
        if not np.isfinite(f).all():
            raise ValueError("frames hold NaN or infinite values")
        return f, m

    def video(self, requests):
        checked = _per_request(requests, self._check_video)
        emb = self._embed_videos(np.concatenate([f for f, _ in checked]), np.concatenate([m for _, m in checked]))
        return _split(emb, [len(f) for f, _ in checked])

    def video_bytes(self, requests):
        size, t = self.config.vision.image_size, self.config.max_frames
        decoded = _per_request(requests, lambda req: decode_videos(req["video"], size, t))
        emb = self._embed_videos(np.concatenate([d["frames"] for d in decoded]),
                                 np.concatenate([d["mask"] for d in decoded]))
        return _split(emb, [len(d["mask"]) for d in decoded])

    def search(self, requests):
        from ..engine.jobs import search_gallery

        def one(req):
            texts, k = caption_strings(req["text"]), np.asarray(req["k"]).reshape(-1)
            if len(texts) != 1 or k.size != 1:
                raise ValueError(f"send one caption and one k, got {len(texts)} and {k.size}")
            if int(k[0]) <= 0:
                raise ValueError(f"k must be >= 1, got {int(k[0])}")
            with self._lock:
                (hits,) = search_gallery(self.model, self.gallery, texts, int(k[0]))
            keys = np.array([[h["path"].encode("utf-8") for h in hits]], dtype=object)
            return {"keys": keys, "scores": np.array([[h["score"] for h in hits]], dtype=np.float32)}

        return _per_request(requests, one)


def bind_models(triton, inference: MuseInference, options: ServeOptions) -> list[str]:
    """Bind the MUSE models into a pytriton.triton.Triton; returns the names bound."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    cfg = inference.config
    d = cfg.embed_dim

    def config(max_batch: int, batching: bool = True) -> ModelConfig:
        batcher = (DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us)
                   if batching and options.dynamic_batching else None)
        return ModelConfig(max_batch_size=max_batch, batcher=batcher)

    emb = [Tensor(name="embedding", dtype=np.float32, shape=(d,))]
    mb = options.max_batch_size
    triton.bind("muse_text", inference.text, inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
                outputs=emb, config=config(mb), strict=True)
    triton.bind("muse_video", inference.video,
                inputs=[Tensor(name="frames", dtype=np.float32, shape=inference.frames_shape),
                        Tensor(name="mask", dtype=np.float32, shape=(cfg.max_frames,))],
                outputs=emb, config=config(mb), strict=True)
    # decoding dominates here and runs per video, so batching buys little; a small batch bounds memory
    triton.bind("muse_video_bytes", inference.video_bytes, inputs=[Tensor(name="video", dtype=bytes, shape=(1,))],
                outputs=emb, config=config(min(mb, 4)), strict=True)
    names = ["muse_text", "muse_video", "muse_video_bytes"]
    if inference.gallery is not None:
        triton.bind("muse_search", inference.search,
                    inputs=[Tensor(name="text", dtype=bytes, shape=(1,)), Tensor(name="k", dtype=np.int32, shape=(1,))],
                    outputs=[Tensor(name="keys", dtype=bytes, shape=(-1,)),
                             Tensor(name="scores", dtype=np.float32, shape=(-1,))],
                    config=config(1, batching=False), strict=True)
        names.append("muse_search")
    return names


def descendant_pids(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc; Linux)."""
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def kill_leftovers(pids: set[int]) -> list[int]:
    """SIGKILL those of `pids` still running; returns them. For the Python stubs a tritonserver that
    crashed on its way out leaves behind (seen once: a segfault while stopping with requests in flight,
    the stub re-parented to init)."""
    import signal

    from pathlib import Path

    killed = []
    for pid in sorted(pids):
        try:
            # only Triton's own processes (comm is cut at 15 characters), never a pid reused by another
            if not Path(f"/proc/{pid}/comm").read_text().strip().startswith(TRITON_PROCESSES):
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ProcessLookupError):
            pass
    return killed


def remove_shared_memory(pid: int) -> list[str]:
    """Unlink the Python backend's shared-memory regions of the PyTriton server started by process `pid`
    (PyTriton names them pytrtion<pid>-<random>-...). A stub that is killed or a tritonserver that
    crashes does not unlink them, and each holds --shm-mb of /dev/shm until reboot. Call once stopped."""
    import glob

    removed = []
    for path in glob.glob(f"/dev/shm/pytrtion{pid}-*"):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def start_triton(options: ServeOptions, log=None):
    """A started-but-empty pytriton Triton (bind models, then `.run()`), with the stub environment and
    LD_LIBRARY_PATH set up (see stub_env)."""
    import pytriton.server.triton_server as triton_server
    import pytriton.triton as pytriton_triton
    from pytriton.triton import Triton, TritonConfig

    from .stub_env import ensure_stub_env, server_env

    stub = ensure_stub_env(log)
    # PyTriton asks this function where the stub's Python lives (to put its bin/ first on PATH); the
    # only hook it offers, so it is replaced for this process.
    triton_server.get_triton_python_backend_python_env = lambda: stub
    os.environ.update(server_env())  # copied into tritonserver's environment when it starts
    # PyTriton starts each Python model's pool at 4 MiB growing by 1 MiB (for Docker's 64 MiB /dev/shm).
    # One ViT-B/32 video request is 7 MiB; with 16 of them in flight unbatched the stub went "not
    # healthy" (once tritonserver segfaulted) while the pool grew step by step. Module globals, read when
    # Triton() builds its configuration.
    pytriton_triton.INITIAL_BACKEND_SHM_SIZE = options.shm_mb << 20
    pytriton_triton.GROWTH_BACKEND_SHM_SIZE = options.shm_mb << 20
    cfg = TritonConfig(http_port=options.http_port, grpc_port=options.grpc_port,
                       metrics_port=options.metrics_port, exit_timeout_secs=options.exit_timeout_s)
    return Triton(config=cfg)
