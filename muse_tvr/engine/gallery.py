"""A gallery: video embeddings on disk, written so that no interruption corrupts or loses them.

Layout of a gallery folder:

  gallery.json            manifest: format, model (fingerprint, name, weight sources, how to rebuild
                          it), embedding dim, the list of shards in row order, files that failed
  shard-000001.safetensors   one float32 tensor "embeddings" (rows, dim), unit-norm rows
  shard-000001.json          {"entries": [...]} one metadata dict per row: path (absolute, as given),
                             key, size, mtime_ns, duration, fps, frame_count, frames_used, indices, kind
  gallery.lock            the writer lock: an OS lock (flock) held on it for a writer's lifetime; its
                          text (pid@host) only names the holder in error messages
  index.faiss, index.json an optional ANN index and the gallery state it was built from
                          (`muse_tvr.engine.ann_index`); the store itself never reads or deletes them
  parts/                  per-worker galleries of a distributed encode, merged into this one and
                          removed by it (`muse_tvr.engine.distributed`)

The store only ever deletes files it wrote: a shard's name is recorded in the manifest ("pending") before
its files are written, and a writer that finds pending names left by a crashed one removes exactly those
files (and their temporary names). A folder that is not empty and holds no manifest is refused as --out.

Writes are append-only and atomic: a batch becomes a NEW shard (both files written to a temporary name
opened with O_EXCL|O_NOFOLLOW, fsynced, renamed), and only then is the manifest replaced by an atomic
rename that lists it, with the sha256 of both files. Readers verify those checksums once per open, while
reading, and name the damaged shard. Rows must be finite and unit-norm to be written. Existing shards are
never modified in place; `compact` merges small shards into a new one, switches the manifest, then deletes
the old files.

Resuming: an entry's key is the resolved path; a file is re-encoded when its size or mtime changed, and
the newer row supersedes the older one (searches skip superseded rows; `compact` drops them).

The model fingerprint is a sha256 over the config and every tensor of the state dict (names, dtypes,
shapes, bytes): a gallery only accepts embeddings from the model that made it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

import numpy as np

FORMAT_TAG = "muse-tvr-gallery/2"
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
    with contextlib.suppress(OSError):  # some platforms cannot open a directory; the rename is still atomic
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a partial one.

    The temporary file is created exclusively and never through a symlink (a pre-placed link cannot
    redirect the write), with mode 0666 less the umask."""
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_manifest(path: Path, m) -> None:
    """Structure of a manifest, so that a hand-edited or foreign JSON file is an error, not a crash."""
    ok = (isinstance(m, dict) and isinstance(m.get("shards"), list) and isinstance(m.get("dim"), int)
          and isinstance(m.get("model"), dict) and isinstance(m.get("failed", {}), dict)
          and isinstance(m.get("pending", []), list)
          and all(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("rows"), int)
                  and isinstance(s.get("sha256"), dict) for s in m["shards"]))
    if not ok:
        raise GalleryError(f"{path}: not a gallery manifest (wrong structure); restore it or re-encode "
                           f"into a new --out folder")


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
        self._verified: set[str] = set()  # shard embedding files whose checksum matched in this open
        self._keys: set[str] | None = None
        self._lock_fd = -1
        self._layout: dict[str, int] = {}  # shard name -> byte offset of its embeddings (read_rows)
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
        except OSError as e:
            raise GalleryError(f"{path}: cannot read the manifest ({e.strerror})") from e
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != FORMAT_TAG:
            raise GalleryError(f"{path}: format {fmt!r}, expected {FORMAT_TAG!r}; re-encode into a new "
                               f"--out folder")
        _check_manifest(path, manifest)
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
        try:
            root.mkdir(parents=True, exist_ok=True)
            # A new gallery's own first files (lock, manifest being written by a racing writer) are not
            # foreign; anything else means the folder is the user's.
            foreign = [p.name for p in root.iterdir() if p.name not in (MANIFEST, LOCK)
                       and not p.name.startswith(f".{MANIFEST}.tmp-")]
        except OSError as e:
            raise GalleryError(f"{root}: cannot create or list the gallery folder ({e.strerror})") from e
        if foreign and not (root / MANIFEST).is_file():
            raise GalleryError(f"{root}: folder is not empty and is not a gallery (holds {foreign[0]!r}); "
                               f"choose a new or empty --out folder")
        lock_fd = _take_lock(root)
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
                g = cls(root, {"format": FORMAT_TAG, "model": model_info, "dim": int(dim), "dtype": "float32",
                               "shards": [], "pending": [], "next_shard": 1, "superseded": 0, "failed": {},
                               "created": time.time()}, writable=True)
                g._save_manifest()
            g._lock_fd = lock_fd
            g._remove_orphans()
            return g
        except BaseException:
            os.close(lock_fd)
            raise

    def close(self) -> None:
        if self.writable:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
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
            shard = next(s for s in self.manifest["shards"] if s["name"] == name)
            try:
                data = path.read_bytes()
                if _sha256(data) != shard["sha256"].get("json"):
                    raise ValueError("checksum mismatch")
                entries = json.loads(data)["entries"]
                if not isinstance(entries, list) or len(entries) != shard["rows"]:
                    raise ValueError(f"expected {shard['rows']} entries")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise GalleryError(f"{path}: damaged shard metadata ({e}); restore the file or re-encode "
                                   f"into a new --out folder") from e
            self._entry_cache[name] = entries
        return self._entry_cache[name]

    def entries(self) -> list[dict]:
        """Metadata of every row, in row order (reads every shard's JSON)."""
        return [e for s in self.manifest["shards"] for e in self.shard_entries(s["name"])]

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
        mask = np.zeros(len(self), dtype=bool)
        mask[[row for row, _ in self.latest().values()]] = True
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
            verify = s["name"] not in self._verified
            with open(path, "rb", buffering=0) as f:
                data_start, rows = _embedding_layout(f, path, self.dim)
                if rows != s["rows"]:
                    raise GalleryError(f"{path}: holds {rows} rows, manifest says {s['rows']}")
                h = None
                if verify:  # hashed as it is read: one pass over the file, not two
                    f.seek(0)
                    h = hashlib.sha256(f.read(data_start))
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
                    if h is not None:
                        h.update(view)
                        if a + len(block) >= rows:
                            self._check_digest(path, h, f, s)
                    yield int(start) + a, block
                if h is not None and rows == 0:
                    self._check_digest(path, h, f, s)

    def _check_digest(self, path: Path, h, f, shard: dict) -> None:
        h.update(f.read())  # anything after the data belongs to the file too
        if h.hexdigest() != shard["sha256"].get("safetensors"):
            raise GalleryError(f"{path}: checksum mismatch, the shard is damaged; restore it or re-encode "
                               f"into a new --out folder")
        self._verified.add(shard["name"])

    def state_digest(self) -> str:
        """sha256 hex naming exactly this gallery's content: model fingerprint, dim and every shard's
        name, rows and checksums in row order. Any add, supersede or compact changes it; an index built
        for one digest is stale for every other (`muse_tvr.engine.ann_index`)."""
        m = self.manifest
        parts = [m["model"]["fingerprint"], str(m["dim"])]
        parts += [f"{s['name']}|{s['rows']}|{s['sha256'].get('safetensors')}|{s['sha256'].get('json')}"
                  for s in m["shards"]]
        return _sha256("\n".join(parts).encode())

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """float32 (n, dim) rows in the given order, read with positioned reads (pread) of just those rows:
        the exact re-ranking step of an ANN search, and an index's training sample.

        Unlike `iter_chunks` this does not re-hash whole shards (that would cost a full scan per query):
        each shard's header and size are checked against the manifest; `iter_chunks` (any exact search,
        `index build`, `gallery export`) verifies the checksums. pread, not a memory map: mapped pages
        would count in the process's resident memory and stay mapped in a long-running server."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.dim), np.float32)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range for a gallery of {len(self)}")
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        row_bytes = self.dim * 4
        for i in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == i)
            local = rows[sel] - int(self._offsets[i])
            order = np.argsort(local, kind="stable")
            s = self.manifest["shards"][int(i)]
            path = self.root / (s["name"] + ".safetensors")
            with open(path, "rb", buffering=0) as f:
                data_start = self._data_start(f, path, s)
                fd = f.fileno()
                # Runs of consecutive rows are one read each.
                srt = local[order]
                breaks = np.flatnonzero(np.diff(srt) != 1) + 1
                for run in np.split(np.arange(len(srt)), breaks):
                    first, n = int(srt[run[0]]), len(run)
                    buf = os.pread(fd, n * row_bytes, data_start + first * row_bytes)
                    if len(buf) != n * row_bytes:
                        raise GalleryError(f"{path}: file is truncated")
                    block = np.frombuffer(buf, np.float32).reshape(n, self.dim)
                    out[sel[order[run]]] = block[srt[run] - first]
        return out

    def _data_start(self, f, path: Path, shard: dict) -> int:
        if shard["name"] not in self._layout:
            data_start, rows = _embedding_layout(f, path, self.dim)
            if rows != shard["rows"] or os.fstat(f.fileno()).st_size < data_start + rows * self.dim * 4:
                raise GalleryError(f"{path}: holds {rows} rows or is shorter than them, manifest says "
                                   f"{shard['rows']}")
            self._layout[shard["name"]] = data_start
        return self._layout[shard["name"]]

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
        # Reserve the name durably first: a shard name is never reused, and a writer that dies half-way
        # leaves only files whose names the manifest records, so the next writer removes exactly those.
        self.manifest["next_shard"] += 1
        self.manifest.setdefault("pending", []).append(name)
        self._save_manifest()
        from safetensors.numpy import save

        emb_bytes = save({TENSOR: np.ascontiguousarray(emb, dtype=np.float32)}, metadata={"format": FORMAT_TAG})
        meta_bytes = json.dumps({"entries": entries}).encode()
        atomic_write_bytes(self.root / (name + ".safetensors"), emb_bytes)
        atomic_write_bytes(self.root / (name + ".json"), meta_bytes)
        self._entry_cache[name] = entries
        self._verified.add(name)
        self.manifest["pending"].remove(name)
        return {"name": name, "rows": int(len(entries)),
                "sha256": {"safetensors": _sha256(emb_bytes), "json": _sha256(meta_bytes)}}

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
        finite = np.isfinite(emb).all(axis=1)
        norms = np.linalg.norm(np.where(finite[:, None], emb, 0), axis=1)
        bad = np.flatnonzero(~finite | (np.abs(norms - 1) > 1e-3))
        if len(bad):
            i = int(bad[0])
            what = "non-finite values" if not finite[i] else f"norm {norms[i]:.4g}, not 1"
            raise ValueError(f"embedding row {i} (key {entries[i]['key']!r}) has {what}; gallery rows must "
                             f"be finite unit vectors ({len(bad)} bad row(s))")
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
        spans = [(self._offsets[i], self._offsets[i + 1]) for i in range(len(shards))]
        small = [i for i, s in enumerate(shards) if s["rows"] < small_rows]
        if len(small) < 2 and live.all():
            return False
        merge = [i for i, (a, b) in enumerate(spans) if i in small or not live[a:b].all()]
        rows = np.concatenate([np.arange(*spans[i]) for i in merge])
        rows = rows[live[rows]]
        all_entries = self.entries()
        keep = [s for i, s in enumerate(shards) if i not in merge]
        if len(rows):
            keep.append(self._write_shard(self.embeddings(rows), [all_entries[r] for r in rows]))
        self.manifest["shards"] = keep
        self.manifest["superseded"] = 0
        self._save_manifest()
        for i in merge:  # only after the manifest no longer lists them
            for suffix in (".safetensors", ".json"):
                (self.root / (shards[i]["name"] + suffix)).unlink(missing_ok=True)
            self._entry_cache.pop(shards[i]["name"], None)
        return True

    def _remove_orphans(self) -> None:
        """Delete what a crashed writer left: the files of shards it reserved (and their temporaries), and
        temporaries of the manifest. Nothing else in the folder is touched."""
        pending = set(self.manifest.get("pending", []))
        ours = {n + sfx for n in pending for sfx in (".safetensors", ".json")}
        tmp_of = {MANIFEST} | ours
        for p in self.root.iterdir():
            stale_tmp = (p.name.startswith(".") and ".tmp-" in p.name
                         and p.name[1:].split(".tmp-", 1)[0] in tmp_of)
            if (p.name in ours or stale_tmp) and p.is_file() and not p.is_symlink():
                p.unlink()
        if pending:
            self.manifest["pending"] = []
            self._save_manifest()


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
def _take_lock(root: Path) -> int:
    """Take the writer lock: an exclusive, non-blocking flock on gallery.lock, held until the returned
    descriptor is closed (also when the process dies). flock works between processes of one host and, on
    Linux NFS clients, is mapped to NFS byte-range locks across hosts. The file is never deleted: deleting
    a locked file would let a second writer lock a new inode."""
    path = root / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        raise GalleryError(f"{path}: cannot open the gallery lock ({e.strerror}); check the folder's "
                           f"permissions") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise GalleryError(f"{root}: another muse-tvr process ({holder}) is writing this gallery; wait for "
                           f"it to finish") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}@{socket.gethostname()}".encode(), 0)
    except OSError:
        pass  # the holder's name is only for messages
    return fd


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
