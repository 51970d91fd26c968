"""Encoding past one process: a deterministic split for schedulers (`encode --shard i/N` + `gallery
merge`) and a Ray Data pipeline (`encode --ray`).

Ray layout. The driver holds the destination gallery's writer lock for the whole run and is its only
writer. Decoding and sampling run as Ray Data map tasks on CPU workers; the model runs in `workers`
actors. Each actor writes its own part gallery, `GALLERY/parts/<host>-<pid>-<hex>/`, with the ordinary
gallery protocol (atomic shards, its own manifest and flock), one shard per batch, so a worker never
waits on another and a killed worker loses at most the batch it was writing. When the dataset is done,
the driver merges every part (checksums verified; rows the gallery already holds for the same unchanged
file are skipped, so a batch that Ray retried after a worker died is not duplicated), then removes the
part's files. A rerun after a crash first merges the parts left behind, then encodes only what is
missing: resumable with no duplicates.

Shared storage across hosts: the gallery folder and the videos must be visible under the same paths on
every node (NFS, Lustre, ...). Every writer of one manifest holds that manifest's flock (Linux NFS clients
map flock to NFS byte-range locks); manifests and shards are replaced by rename, which is atomic on
NFS for a single client. Parts have one writer each, so no lock is ever contended across hosts.

GPU: actors ask Ray for one GPU each when the cluster has at least `workers` GPUs and move the model
there; that path has NOT been tested here (no GPU on the dev box).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path

import numpy as np

PARTS = "parts"


# ----- deterministic split ----------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' with 0 <= i < N -> (i, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: give i/N, e.g. 0/4 (i counts from 0)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need N >= 1 and 0 <= i < N (i counts from 0)")
    return i, n


def shard_of(key: str, n: int) -> int:
    """Which of n shards a key belongs to: sha256 of the key, so the split depends on nothing but the
    key (not on list order, the host, or Python's hash seed) and adding files never moves old ones."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def select_shard(paths, i: int, n: int) -> list:
    """The inputs of shard i of n, keyed by resolved path (what the gallery uses as the key)."""
    return [p for p in paths if shard_of(str(Path(p).resolve()), n) == i]


# ----- Ray ---------------------------------------------------------------------------------------------
def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError("--ray needs Ray Data: pip install 'muse-tvr[scale]' (ray[data])") from None
    return ray


def _decode_row(row: dict, cfg, strict: bool) -> dict:
    """Ray map task: one input -> frames float32 (T, 3, S, S), mask (T,), entry JSON, or an error."""
    from .jobs import describe_failure, sample_for_model

    key = json.loads(row["key"])
    try:
        (frames, mask), entry = sample_for_model(row["path"], key, cfg, strict)
        return {"path": row["path"], "entry": json.dumps(entry), "error": "",
                "frames": np.asarray(frames, np.float32), "mask": np.asarray(mask, np.float32)}
    except Exception as e:  # recorded per file by the driver, as the single-process encode does
        s = cfg.vision.image_size
        return {"path": row["path"], "entry": "", "error": describe_failure(row["path"], e),
                "frames": np.zeros((cfg.max_frames, 3, s, s), np.float32),
                "mask": np.zeros(cfg.max_frames, np.float32)}


class _Encoder:
    """Ray actor: the model, and a part gallery it alone writes."""

    def __init__(self, spec: dict, fingerprint: str, gallery_dir: str, threads: int, backend: str):
        from .jobs import build_model
        from .gallery import Gallery

        import torch

        self.model, info = build_model(spec, threads, backend)
        if info["fingerprint"] != fingerprint:
            raise RuntimeError(f"worker on {socket.gethostname()} built model {info['fingerprint'][:16]}, not "
                               f"the driver's {fingerprint[:16]}: the model files differ between hosts")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda":  # untested here
            self.model.to(self.device)
        part = Path(gallery_dir) / PARTS / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.gallery = Gallery.create_or_open(part, info, self.model.config.embed_dim)

    def __call__(self, batch: dict) -> dict:
        from .jobs import embed_batch

        ok = [i for i, e in enumerate(batch["error"]) if not e]
        if ok:
            inputs = [(batch["frames"][i], batch["mask"][i]) for i in ok]
            if self.device != "cpu":
                import torch
                inputs = [(torch.as_tensor(f).to(self.device), torch.as_tensor(m).to(self.device))
                          for f, m in inputs]
            emb = embed_batch(self.model, inputs)
            self.gallery.add(emb, [json.loads(batch["entry"][i]) for i in ok])
            _test_hook_die()
        return {"path": batch["path"], "error": batch["error"]}


def _test_hook_die() -> None:
    """For the killed-worker test only: MUSE_TVR_TEST_KILL_AFTER_SHARD=<marker file> makes the first
    actor that finds no marker die (os._exit) right after saving a shard, before Ray hears of the batch."""
    marker = os.environ.get("MUSE_TVR_TEST_KILL_AFTER_SHARD")
    if marker:
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            return
        os._exit(9)


def merge_parts(gallery, progress: bool = True, wait_s: float = 30.0) -> dict:
    """Merge every part gallery under `gallery.root/parts` into `gallery` (open for writing), then remove
    each merged part's files: its listed shards, manifest and lock, and the folder if then empty. A part
    still locked by a live writer after `wait_s` is merged as far as it is saved and left for the next run.
    Returns {"parts": n, "parts_with_rows": n, "added": rows, "duplicates": rows}."""
    from .gallery import MANIFEST, LOCK, Gallery, GalleryError
    from .gallery_io import merge_into

    root = Path(gallery.root) / PARTS
    parts = sorted(p for p in root.glob("*") if (p / MANIFEST).is_file()) if root.is_dir() else []
    total = {"parts": len(parts), "parts_with_rows": 0, "added": 0, "duplicates": 0}
    for part in parts:
        total["parts_with_rows"] += len(Gallery.open(part)) > 0
        res = merge_into(gallery, [part], progress=progress)
        total["added"] += res["added"]
        total["duplicates"] += res["duplicates"]
        deadline = time.monotonic() + wait_s
        while True:
            try:  # the part's writer (a finished actor) must be gone before its files go
                w = Gallery.create_or_open(part, gallery.model_info, gallery.dim)
                break
            except GalleryError:
                if time.monotonic() > deadline:
                    print(f"{part}: still locked by a worker; merged what it saved, left for the next run",
                          file=sys.stderr)
                    w = None
                    break
                time.sleep(0.5)
        if w is None:
            continue
        names = [s["name"] for s in w.manifest["shards"]]
        for n in names:
            for suffix in (".safetensors", ".json"):
                (part / (n + suffix)).unlink(missing_ok=True)
        (part / MANIFEST).unlink()
        w.close()
        (part / LOCK).unlink(missing_ok=True)
        try:
            part.rmdir()
        except OSError:
            pass  # something else is in it: not ours to delete
    if root.is_dir():
        try:
            root.rmdir()
        except OSError:
            pass
    return total


def ray_encode(spec: dict, paths, gallery_dir, address: str = "local", workers: int = 2, batch_size: int = 8,
               strict: bool = False, threads: int = 0, backend: str = "auto", progress: bool = True) -> dict:
    """Encode `paths` into the gallery with Ray Data (see the module docstring). `address`: "local" starts
    a Ray instance on this machine (or uses the one this process already joined), anything else is passed
    to ray.init (e.g. "auto", "ray://head:10001"). Returns the same dict as `encode_into_gallery`."""
    from tqdm import tqdm

    from .jobs import build_model, plan_encode, random_weights_banner
    from .gallery import Gallery

    if batch_size < 1 or workers < 1:
        raise ValueError(f"--batch-size and --workers must be >= 1, got {batch_size} and {workers}")
    ray = _ray()
    model, info = build_model(spec, threads, backend)
    random_weights_banner(info)
    cfg = model.config
    del model  # the driver only needs the fingerprint and the config
    gallery = Gallery.create_or_open(gallery_dir, info, cfg.embed_dim)
    started = False
    try:
        left = merge_parts(gallery, progress=progress)
        if left["parts"]:
            print(f"merged {left['parts']} part(s) left by an earlier run: {left['added']} rows",
                  file=sys.stderr)
        todo, skipped, failed = plan_encode(gallery, paths)
        result = {"encoded": [], "skipped": skipped, "failed": failed}
        if todo:
            if not ray.is_initialized():
                ray.init(address=None if address == "local" else address,
                         num_cpus=2 * workers if address == "local" else None, log_to_driver=False,
                         include_dashboard=False)
                started = True
            gpus = ray.cluster_resources().get("GPU", 0)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours counts saved videos instead
            items = [{"path": str(p), "key": json.dumps(k)} for p, k in todo]
            ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * workers))
            # Fractional CPUs: on a small local cluster the actors must not starve the decode tasks.
            ds = ds.map(_decode_row, fn_kwargs={"cfg": cfg, "strict": strict}, num_cpus=0.5)
            hook = {k: v for k, v in os.environ.items() if k == "MUSE_TVR_TEST_KILL_AFTER_SHARD"}
            # Ray Data restarts a dead actor and retries its batch (max_restarts and max_task_retries
            # are -1 by default for actor pools); the merge drops the rows that batch had already saved.
            ds = ds.map_batches(_Encoder, batch_size=batch_size,
                                compute=ray.data.ActorPoolStrategy(size=workers),
                                num_cpus=0.5, num_gpus=1 if gpus >= workers else 0,
                                runtime_env={"env_vars": hook} if hook else None,
                                fn_constructor_kwargs={"spec": spec, "fingerprint": info["fingerprint"],
                                                       "gallery_dir": str(Path(gallery_dir).resolve()),
                                                       "threads": threads, "backend": backend})
            bar = tqdm(total=len(todo), unit="video", desc="encode (ray)", disable=not progress,
                       file=sys.stderr)
            for row in ds.iter_rows():
                if row["error"]:
                    result["failed"][row["path"]] = row["error"]
                    bar.write(f"skipped: {row['error']}", file=sys.stderr)
                bar.update(1)
            bar.close()
            merged = merge_parts(gallery, progress=progress)
            done = {e["key"] for e in gallery.entries()}
            result["encoded"] = [k["key"] for _, k in todo if k["key"] in done]
            result["ray"] = merged
            print(f"ray: {workers} worker(s), {merged['parts']} part(s) merged, "
                  f"{merged['duplicates']} retried row(s) dropped", file=sys.stderr)
        if result["failed"]:
            gallery.record_failures({str(Path(k).resolve()): v for k, v in result["failed"].items()})
        gallery.compact()
    finally:
        gallery.close()
        if started:
            ray.shutdown()
    result["gallery"] = gallery
    return result
