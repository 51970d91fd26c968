"""Embeddings in and out of a gallery, and merging galleries, in bounded memory.

- `add_embeddings`: a float32 (N, D) .npy of unit rows plus a text file of N keys (one per line) become
  gallery shards. The .npy is memory-mapped and copied `chunk_rows` rows at a time.
- `export_embeddings`: the live rows (row order) to a float32 (N, D) .npy written through a memory map,
  and their keys to a text file, one per line.
- `merge_galleries`: the live rows of other galleries (per-worker or `encode --shard i/N` outputs) appended
  to one gallery; rows already present for the same unchanged file are skipped, so merging twice adds
  nothing.

Embeddings that come from outside (no model of ours made them) go into a *raw* gallery: its model
fingerprint is `RAW_FINGERPRINT`, it accepts only raw embeddings of its dim, and it is searched with query
vectors (`search --query-npy`). A gallery made by a model accepts added embeddings only when the caller
names the same model (the fingerprint must match).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .gallery import Gallery, GalleryError, _fsync_dir, _tmp_name

RAW_FINGERPRINT = "raw-embeddings"
RAW_INFO = {"fingerprint": RAW_FINGERPRINT, "name": "raw embeddings", "weight_sources": {}, "spec": None}


def _progress(total: int, desc: str, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit="row", unit_scale=True, desc=desc, disable=not progress, file=sys.stderr)


def _open_npy(path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"embeddings file not found: {path}") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a .npy array ({e}); save embeddings with numpy.save") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
        raise ValueError(f"{path}: expected float32 (N, D) embeddings, got {getattr(arr, 'dtype', '?')} "
                         f"{getattr(arr, 'shape', '?')}; convert with arr.astype(np.float32)")
    return arr


def _read_keys(path, n: int):
    """Yield the n keys of a one-key-per-line text file, checking there are exactly n, none empty."""
    try:
        f = open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise FileNotFoundError(f"keys file not found: {path}") from None
    with f:
        i = 0
        for i, line in enumerate(f, start=1):
            key = line.rstrip("\r\n")
            if not key:
                raise ValueError(f"{path}:{i}: empty key; give one non-empty key per line")
            if i > n:
                raise ValueError(f"{path}: more than {n} keys for {n} embedding rows")
            yield key
        if i != n:
            raise ValueError(f"{path}: {i} keys for {n} embedding rows; give one key per row")


def query_vectors(path) -> np.ndarray:
    """float32 (Q, D) queries from a .npy (a single (D,) vector is one query), normalised to unit rows."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"query file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a .npy array ({e}); save query vectors with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: holds several arrays; save one (Q, D) array with numpy.save")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
        raise ValueError(f"{path}: expected finite float (Q, D) query vectors, got {arr.dtype} {arr.shape}")
    q = arr.astype(np.float32)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{path}: query row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros")
    return q / norms


def add_embeddings(gallery_dir, npy, keys_file, model_info: dict | None = None, chunk_rows: int = 131072,
                   progress: bool = True) -> dict:
    """Append E = float32 (N, D) unit rows from `npy` with keys from `keys_file` to the gallery.

    model_info: the model that made E (its fingerprint must equal the gallery's), or None for raw
    embeddings (a new gallery becomes raw; an existing one must be raw). Memory: one chunk of rows plus
    the gallery's key set. Each chunk becomes one durable shard. Returns {"added": N, "rows": len}."""
    emb = _open_npy(npy)
    n, dim = emb.shape
    info = model_info or RAW_INFO
    root = Path(gallery_dir)
    if (root / "gallery.json").is_file():
        have = Gallery.open(root).model_info
        if have["fingerprint"] != info["fingerprint"]:
            made = "raw embeddings" if have["fingerprint"] == RAW_FINGERPRINT else f"model {have.get('name')}"
            given = "raw embeddings (no model given)" if model_info is None else f"model {info.get('name')}"
            raise GalleryError(f"{root}: gallery holds {made} (fingerprint {have['fingerprint'][:16]}), "
                               f"refusing {given}; add to a new gallery, or name the gallery's model")
    for _ in _read_keys(keys_file, n):  # a first pass checks the whole file before any row is written
        pass
    keys = _read_keys(keys_file, n)
    with Gallery.create_or_open(root, info, dim) as g, _progress(n, "add-embeddings", progress) as bar:
        for a in range(0, n, chunk_rows):
            block = np.array(emb[a:a + chunk_rows], dtype=np.float32)  # copy out of the map: one chunk
            ks = [next(keys) for _ in range(len(block))]
            try:
                g.add(block, [{"key": k, "kind": "embedding"} for k in ks])
            except ValueError as e:
                raise ValueError(f"{npy}: rows {a}..{a + len(block) - 1}: {e}") from None
            bar.update(len(block))
        return {"added": n, "rows": len(g)}


def _exclusive_tmp(path: Path) -> Path:
    """A new temporary file beside `path`, created with O_EXCL|O_NOFOLLOW (never someone else's file)."""
    tmp = _tmp_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
    return tmp


def export_embeddings(gallery_dir, npy, keys_file, chunk_rows: int = 65536, progress: bool = True) -> int:
    """Write the gallery's live rows, in row order, to `npy` (float32 (N, D), through a memory map) and
    their keys to `keys_file`. Neither output may exist yet (nothing the user had is overwritten); both
    appear only when complete (temporary names, then renames). Returns N."""
    g = Gallery.open(gallery_dir)
    npy, keys_file = Path(npy), Path(keys_file)
    for p in (npy, keys_file):
        if p.exists() or p.is_symlink():
            raise ValueError(f"{p}: exists; export writes new files only: choose another name or remove it")
    live = g.live_mask() if g.has_superseded else None
    n = int(live.sum()) if live is not None else len(g)
    entries = (e for s in g.manifest["shards"] for e in g.shard_entries(s["name"]))
    tmp_npy, tmp_keys = _exclusive_tmp(npy), _exclusive_tmp(keys_file)
    try:
        out = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=(n, g.dim))
        at = 0
        with open(tmp_keys, "w", encoding="utf-8", newline="\n") as kf, _progress(n, "export", progress) as bar:
            for start, block in g.iter_chunks(chunk_rows):
                keep = live[start:start + len(block)] if live is not None else np.ones(len(block), bool)
                for e, k in zip((next(entries) for _ in range(len(block))), keep):
                    if k:
                        if "\n" in e["key"] or "\r" in e["key"]:
                            raise ValueError(f"key {e['key']!r} holds a line break: it cannot be exported "
                                             f"one per line")
                        kf.write(e["key"] + "\n")
                out[at:at + int(keep.sum())] = block[keep]
                at += int(keep.sum())
                bar.update(len(block))
            kf.flush()
            os.fsync(kf.fileno())
        out.flush()
        del out
        os.replace(tmp_npy, npy)
        os.replace(tmp_keys, keys_file)
    except BaseException:
        tmp_npy.unlink(missing_ok=True)
        tmp_keys.unlink(missing_ok=True)
        raise
    _fsync_dir(npy.parent)
    return n


def _same_file(a: dict, b: dict) -> bool:
    """Two entries describe the same encoding of the same input (so one of them is a duplicate)."""
    return (a["key"] == b["key"] and a.get("size") is not None and a.get("size") == b.get("size")
            and a.get("mtime_ns") == b.get("mtime_ns"))


def merge_galleries(dest, parts: list, chunk_rows: int = 65536, progress: bool = True) -> dict:
    """Append the live rows of each gallery in `parts` to `dest` (created if missing), in the order given.

    All galleries must share one model fingerprint and dim. A row whose key `dest` already holds for the
    same unchanged file (same size and mtime) is skipped; a changed file's row supersedes the old one, as
    in `encode`. Part rows are read with checksum verification. The parts are left as they are.
    Returns {"added": rows added, "duplicates": rows skipped, "rows": len(dest)}."""
    if not parts:
        raise ValueError("no galleries to merge; name one or more part galleries")
    first = Gallery.open(parts[0])
    with Gallery.create_or_open(dest, first.model_info, first.dim) as out:
        return merge_into(out, parts, chunk_rows, progress)


def merge_into(out: Gallery, parts: list, chunk_rows: int = 65536, progress: bool = True) -> dict:
    """`merge_galleries` into a gallery already open for writing (its writer keeps the lock)."""
    opened = [Gallery.open(p) for p in parts]
    info, dim = out.model_info, out.dim
    for p, g in zip(parts, opened):
        if g.model_info["fingerprint"] != info["fingerprint"] or g.dim != dim:
            raise GalleryError(f"{p}: made by model {g.model_info.get('name')} (fingerprint "
                               f"{g.model_info['fingerprint'][:16]}, dim {g.dim}), not the model of {out.root} "
                               f"({info['fingerprint'][:16]}, dim {dim}); merge galleries of one model only")
    added = dup = 0
    latest = {k: e for k, (_, e) in out.latest().items()}
    total = sum(len(g) for g in opened)
    with _progress(total, "merge", progress) as bar:
        for g in opened:
            live = g.live_mask()
            entries = g.entries()
            for start, block in g.iter_chunks(chunk_rows):
                take = [i for i in range(len(block)) if live[start + i]
                        and not (entries[start + i]["key"] in latest
                                 and _same_file(latest[entries[start + i]["key"]], entries[start + i]))]
                dup += int(live[start:start + len(block)].sum()) - len(take)
                if take:
                    new = [entries[start + i] for i in take]
                    out.add(block[take], new)
                    latest.update({e["key"]: e for e in new})
                    added += len(take)
                bar.update(len(block))
    failed = {k: v for g in opened for k, v in g.manifest["failed"].items() if k not in latest}
    if failed:  # kept so that reports (and reruns of encode) still see them
        out.record_failures(failed)
    out.compact()  # per-batch shards of many workers become one
    return {"added": added, "duplicates": dup, "rows": len(out)}
