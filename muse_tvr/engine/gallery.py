"""A gallery: video embeddings on disk, written so that no interruption corrupts or loses them.

Layout of a gallery folder:

  gallery.json            manifest: format, model (fingerprint, name, weight sources, how to rebuild
                          it), embedding dim, the list of shards in row order, files that failed
  shard-000001.safetensors   one float32 tensor "embeddings" (rows, dim), unit-norm rows
  shard-000001.json          {"entries": [...]} one metadata dict per row: path, key, size, mtime_ns,
                             duration, fps, frame_count, frames_used, indices, kind
  gallery.lock            present while a writer holds the gallery (holds its pid)

Writes are append-only and atomic: a batch becomes a NEW shard (both files written to a temporary name,
fsynced, renamed), and only then is the manifest replaced by an atomic rename that lists it. A crash
before that rename leaves an unlisted shard that readers ignore and the next writer deletes; a crash
after it leaves a complete shard. Existing shards are never modified in place; `compact` merges small
shards into a new one, switches the manifest, then deletes the old files.

Resuming: an entry's key is the resolved path; a file is re-encoded when its size or mtime changed, and
the newer row supersedes the older one (searches skip superseded rows; `compact` drops them).

The model fingerprint is a sha256 over the config and every tensor of the state dict (names, dtypes,
shapes, bytes): a gallery only accepts embeddings from the model that made it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

FORMAT_TAG = "muse-tvr-gallery/1"
MANIFEST = "gallery.json"
LOCK = "gallery.lock"
TENSOR = "embeddings"


class GalleryError(ValueError):
    """A gallery folder that is missing, damaged, locked or made by another model."""


# ----- model fingerprint ---------------------------------------------------------------------------
def model_fingerprint(model) -> str:
    """sha256 hex over the model's config JSON and all state-dict tensors (name, dtype, shape, bytes).

    About 0.3 s per 600 MB of weights on a 2-core CPU; the bytes are hashed in place, not copied."""
    import torch

    h = hashlib.sha256()
    h.update(model.config.to_json().encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# ----- atomic file helpers --------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a partial one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_save_embeddings(path: Path, emb: np.ndarray) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save({TENSOR: np.ascontiguousarray(emb, dtype=np.float32)},
                                  metadata={"format": FORMAT_TAG}))


# ----- the gallery ----------------------------------------------------------------------------------
class Gallery:
    """Open with `Gallery.create_or_open` (writers) or `Gallery.open` (readers).

    Rows are numbered in manifest order; `entry(i)` is row i's metadata, `live` marks rows not
    superseded by a later encoding of the same file."""

    def __init__(self, root: Path, manifest: dict, writable: bool):
        self.root = root
        self.manifest = manifest
        self.writable = writable
        self._entry_cache: dict[str, list[dict]] = {}
        self._keys: set[str] | None = None
        self._offsets = np.cumsum([0] + [s["rows"] for s in manifest["shards"]])

    # --- opening ---
    @classmethod
    def open(cls, root: str | os.PathLike) -> "Gallery":
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise GalleryError(f"{root}: not a gallery (no {MANIFEST}); create one with `muse-tvr encode`")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GalleryError(f"{path}: damaged manifest ({e})") from e
        if manifest.get("format") != FORMAT_TAG:
            raise GalleryError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT_TAG!r}")
        for s in manifest["shards"]:
            for suffix in (".safetensors", ".json"):
                if not (root / (s["name"] + suffix)).is_file():
                    raise GalleryError(f"{root}: shard file {s['name'] + suffix} listed in the manifest "
                                       f"is missing")
        return cls(root, manifest, writable=False)

    @classmethod
    def create_or_open(cls, root: str | os.PathLike, model_info: dict, dim: int) -> "Gallery":
        """Open for writing (taking the lock), creating the folder if needed. `model_info` must hold
        "fingerprint"; an existing gallery made by another model is refused."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise GalleryError(f"{root}: exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        _take_lock(root)
        try:
            if (root / MANIFEST).is_file():
                g = cls.open(root)
                have = g.manifest["model"]["fingerprint"]
                if have != model_info["fingerprint"]:
                    raise GalleryError(
                        f"{root}: this gallery was encoded with model {g.manifest['model'].get('name')} "
                        f"fingerprint {have[:16]}..., not the current model ({model_info['fingerprint'][:16]}"
                        f"...). Use another --out folder, or delete this one to re-encode.")
                if g.manifest["dim"] != dim:
                    raise GalleryError(f"{root}: embedding dim {g.manifest['dim']} != model's {dim}")
                g.writable = True
            else:
                manifest = {"format": FORMAT_TAG, "model": model_info, "dim": int(dim), "dtype": "float32",
                            "shards": [], "next_shard": 1, "superseded": 0, "failed": {},
                            "created": time.time()}
                atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1).encode())
                g = cls(root, manifest, writable=True)
            g._remove_orphans()
            return g
        except BaseException:
            _release_lock(root)
            raise

    def close(self) -> None:
        if self.writable:
            _release_lock(self.root)
            self.writable = False

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading ---
    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def model_info(self) -> dict:
        return self.manifest["model"]

    def shard_entries(self, name: str) -> list[dict]:
        if name not in self._entry_cache:
            path = self.root / (name + ".json")
            try:
                self._entry_cache[name] = json.loads(path.read_text())["entries"]
            except (OSError, json.JSONDecodeError, KeyError) as e:
                raise GalleryError(f"{path}: damaged shard metadata ({e})") from e
        return self._entry_cache[name]

    def entries(self) -> list[dict]:
        """Metadata of every row, in row order (reads every shard's JSON)."""
        out: list[dict] = []
        for s in self.manifest["shards"]:
            out.extend(self.shard_entries(s["name"]))
        return out

    def entry(self, row: int) -> dict:
        i = int(np.searchsorted(self._offsets, row, side="right")) - 1
        if not 0 <= row < len(self) or i < 0:
            raise IndexError(f"row {row} out of range for a gallery of {len(self)}")
        return self.shard_entries(self.manifest["shards"][i]["name"])[row - int(self._offsets[i])]

    @property
    def has_superseded(self) -> bool:
        return self.manifest.get("superseded", 0) > 0

    def live_mask(self) -> np.ndarray:
        """bool (rows,): False for rows superseded by a later row of the same key."""
        if not self.has_superseded:
            return np.ones(len(self), dtype=bool)
        last: dict[str, int] = {}
        for i, e in enumerate(self.entries()):
            last[e["key"]] = i
        mask = np.zeros(len(self), dtype=bool)
        mask[list(last.values())] = True
        return mask

    def latest(self) -> dict[str, tuple[int, dict]]:
        """key -> (row, entry) of the newest row per key."""
        return {e["key"]: (i, e) for i, e in enumerate(self.entries())}

    def iter_chunks(self, chunk_rows: int = 16384) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, float32 (n, dim) block) over the whole gallery with at most `chunk_rows`
        rows in memory at a time. Blocks are read straight from the shard files into fresh arrays
        (`readinto`, one copy), about 3x faster than slicing through safetensors' own reader."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        for s, start in zip(self.manifest["shards"], self._offsets[:-1]):
            path = self.root / (s["name"] + ".safetensors")
            with open(path, "rb", buffering=0) as f:
                data_start, rows = _embedding_layout(f, path, self.dim)
                if rows != s["rows"]:
                    raise GalleryError(f"{path}: holds {rows} rows, manifest says {s['rows']}")
                f.seek(data_start)
                for a in range(0, rows, chunk_rows):
                    block = np.empty((min(chunk_rows, rows - a), self.dim), np.float32)
                    view = memoryview(block).cast("B")
                    got = 0
                    while got < len(view):  # readinto may return short counts
                        n = f.readinto(view[got:])
                        if not n:
                            raise GalleryError(f"{path}: file is truncated")
                        got += n
                    yield int(start) + a, block

    def embeddings(self, rows: np.ndarray | list[int] | None = None) -> np.ndarray:
        """All embeddings (or the given rows, in the given order) as one float32 array."""
        if rows is None:
            parts = [c for _, c in self.iter_chunks()]
            return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        for start, chunk in self.iter_chunks():
            sel = (rows >= start) & (rows < start + len(chunk))
            if sel.any():
                out[sel] = chunk[rows[sel] - start]
        return out

    # --- writing ---
    def _check_writable(self) -> None:
        if not self.writable:
            raise GalleryError(f"{self.root}: opened read-only")

    def _save_manifest(self) -> None:
        atomic_write_bytes(self.root / MANIFEST, json.dumps(self.manifest, indent=1).encode())
        self._offsets = np.cumsum([0] + [s["rows"] for s in self.manifest["shards"]])

    def _write_shard(self, emb: np.ndarray, entries: list[dict]) -> dict:
        name = f"shard-{self.manifest['next_shard']:06d}"
        # Reserve the number first, so a shard name is never reused even if this write dies half-way.
        self.manifest["next_shard"] += 1
        _atomic_save_embeddings(self.root / (name + ".safetensors"), emb)
        atomic_write_bytes(self.root / (name + ".json"), json.dumps({"entries": entries}).encode())
        self._entry_cache[name] = entries
        return {"name": name, "rows": int(len(entries))}

    def add(self, embeddings: np.ndarray, entries: list[dict]) -> None:
        """Append rows durably: float32 (n, dim) embeddings and n metadata dicts (each with "key")."""
        self._check_writable()
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim or emb.shape[0] != len(entries):
            raise ValueError(f"embeddings must be ({len(entries)}, {self.dim}), got {emb.shape}")
        if not emb.shape[0]:
            return
        if any("key" not in e for e in entries):
            raise ValueError("every gallery entry needs a 'key'")
        if self._keys is None:
            self._keys = {e["key"] for e in self.entries()}
        # Counted here so that readers of a gallery without superseded rows never parse all metadata.
        for e in entries:
            if e["key"] in self._keys:
                self.manifest["superseded"] = self.manifest.get("superseded", 0) + 1
            self._keys.add(e["key"])
        shard = self._write_shard(emb, entries)
        self.manifest["shards"].append(shard)
        for e in entries:
            self.manifest["failed"].pop(e["key"], None)
        self._save_manifest()

    def record_failures(self, failed: dict[str, str]) -> None:
        """Remember files that could not be encoded (key -> reason), for reports; reruns retry them."""
        self._check_writable()
        self.manifest["failed"].update(failed)
        self._save_manifest()

    def compact(self, small_rows: int = 65536) -> bool:
        """Merge shards with fewer than `small_rows` rows (and drop superseded rows) into one new shard.
        Returns True if anything changed."""
        self._check_writable()
        shards = self.manifest["shards"]
        live = self.live_mask()
        self._keys = None
        small = [i for i, s in enumerate(shards) if s["rows"] < small_rows]
        has_dead = not live.all()
        if len(small) < 2 and not has_dead:
            return False
        merge = set(small) | ({i for i, s in enumerate(shards)
                               if not live[self._offsets[i]:self._offsets[i + 1]].all()} if has_dead else set())
        merge_list = sorted(merge)
        rows = np.concatenate([np.arange(self._offsets[i], self._offsets[i + 1]) for i in merge_list])
        rows = rows[live[rows]]
        all_entries = self.entries()
        new_entries = [all_entries[r] for r in rows]
        new_emb = self.embeddings(rows)
        keep = [s for i, s in enumerate(shards) if i not in merge]
        old = [shards[i]["name"] for i in merge_list]
        if len(rows):
            keep.append(self._write_shard(new_emb, new_entries))
        self.manifest["shards"] = keep
        self.manifest["superseded"] = 0
        self._save_manifest()
        for name in old:  # only after the manifest no longer lists them
            for suffix in (".safetensors", ".json"):
                try:
                    (self.root / (name + suffix)).unlink()
                except FileNotFoundError:
                    pass
            self._entry_cache.pop(name, None)
        return True

    def _remove_orphans(self) -> None:
        listed = {s["name"] for s in self.manifest["shards"]}
        for p in self.root.iterdir():
            stem = p.name.split(".", 1)[0]
            orphan_shard = p.name.startswith("shard-") and stem not in listed
            stale_tmp = p.name.startswith(".") and ".tmp-" in p.name
            if orphan_shard or stale_tmp:
                p.unlink()


def _embedding_layout(f, path: Path, dim: int) -> tuple[int, int]:
    """(byte offset of the float32 embedding data, rows) from a safetensors header: 8 bytes little-endian
    header length, then a JSON header naming each tensor's dtype, shape and data offsets."""
    import struct

    head = f.read(8)
    try:
        (n,) = struct.unpack("<Q", head)
        if n > os.fstat(f.fileno()).st_size:
            raise ValueError(f"header length {n} exceeds the file size")
        header = json.loads(f.read(n))
        t = header[TENSOR]
        begin, end = t["data_offsets"]
        rows, cols = t["shape"]
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise GalleryError(f"{path}: not a gallery shard ({type(e).__name__}: {e})") from e
    if t["dtype"] != "F32" or cols != dim or end - begin != rows * cols * 4:
        raise GalleryError(f"{path}: expected float32 ({rows}, {dim}) embeddings, header says "
                           f"{t['dtype']} {t['shape']}")
    return 8 + n + begin, rows


# ----- the writer lock ------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(root: Path) -> None:
    path = root / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise GalleryError(f"{root}: another muse-tvr process (pid {pid}) is writing this gallery; "
                                   f"wait for it, or delete {path} if that process is gone") from None
            path.unlink(missing_ok=True)  # left by a process that died: safe to take over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise GalleryError(f"{root}: could not take the lock {path}")


def _release_lock(root: Path) -> None:
    path = root / LOCK
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (OSError, ValueError):
        pass


def file_key(path: str | os.PathLike) -> dict:
    """Identity of an input for resuming: resolved path, size and mtime (folders: newest image)."""
    p = Path(path).resolve()
    st = p.stat()
    size, mtime = st.st_size, st.st_mtime_ns
    if p.is_dir():
        from .video import frame_images
        imgs = frame_images(p)
        size = sum(i.stat().st_size for i in imgs)
        mtime = max([i.stat().st_mtime_ns for i in imgs], default=mtime)
    return {"key": str(p), "size": int(size), "mtime_ns": int(mtime)}
