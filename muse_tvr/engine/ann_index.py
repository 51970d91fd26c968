"""An approximate nearest-neighbour index (FAISS) beside a gallery, and the search that uses it.

Files, inside the gallery folder (written only by `build_index`, each atomically):
  index.faiss   the FAISS index; ids are gallery row numbers, only live (not superseded) rows are in it
  index.json    {"format", "kind", "factory", "params", "gallery_state", "rows", "dim", "index_sha256",
                 "index_bytes", "build_seconds", "faiss"}

Kinds (`IndexSpec.choose`):
  flat    exact inner product over all vectors in memory (rows x dim x 4 bytes): small galleries
  ivf-pq  inverted lists of product-quantized codes (`m` bytes per row, default dim/8), coarse
          quantizer of `nlist` centroids (an HNSW graph over them when nlist >= 1024, so that adding 10M
          rows assigns each by a graph walk, not nlist dot products). The top `rerank` candidates of the
          codes are re-scored exactly from the gallery's shards (pread of those rows), so returned scores are
          true cosines and recall does not stop at what 8-bit codes can rank.
  hnsw    an HNSW graph over full float32 vectors (`m` links per node): fast and accurate, but holds
          rows x dim x 4 bytes plus the graph in memory and builds slowly; not for 10M on a 24 GiB box
  auto    flat up to 100k rows, ivf-pq above

Freshness: `index.json` records `Gallery.state_digest()` (model fingerprint, dim, every shard's name,
rows and checksums). A search whose gallery no longer has that digest (rows added, superseded, compacted)
or whose index file does not match its recorded sha256 does not use the index: it warns in one line and
scans exactly. Rebuild with `muse-tvr index build`.

Training reads a sample of live rows spread evenly over the gallery (sorted, so the reads go forward);
adding streams the gallery with `iter_chunks` (checksums verified), `chunk_rows` rows at a time. Peak
memory is the codes (rows x (m + 8) bytes for ivf-pq) plus one chunk plus the training sample.

GPU: when faiss reports GPUs (a faiss-gpu install), flat and ivf-pq searches run on them. That path is
written from FAISS's documented API and has NOT been tested here (no GPU FAISS on the dev box).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .gallery import Gallery, atomic_write_bytes, _fsync_dir, _tmp_name

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
FORMAT = "muse-tvr-index/1"
KINDS = ("auto", "flat", "ivf-pq", "hnsw")
AUTO_FLAT_MAX_ROWS = 100_000


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ValueError("the ANN index needs FAISS: pip install 'muse-tvr[scale]' (faiss-cpu), or "
                         "faiss-gpu on a GPU host") from None
    return faiss


@dataclass(frozen=True)
class IndexSpec:
    """What to build. nlist: IVF lists; m: PQ bytes per row (ivf-pq) or links per node (hnsw)."""
    kind: str
    nlist: int = 0
    m: int = 0
    train_rows: int = 0

    @classmethod
    def choose(cls, rows: int, dim: int, kind: str = "auto", nlist: int | None = None, m: int | None = None,
               train_rows: int | None = None) -> "IndexSpec":
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        if kind == "auto":
            kind = "flat" if rows <= AUTO_FLAT_MAX_ROWS else "ivf-pq"
        if kind == "flat":
            return cls("flat")
        if kind == "hnsw":
            return cls("hnsw", m=m or 32)
        # ~4 sqrt(N) lists, a power of two; at most 4096 because k-means costs nlist x sample x dim per
        # iteration (4096 lists on a 256k sample: minutes on 2 cores) and FAISS wants >= 39 rows per list.
        nlist = nlist or min(4096, max(16, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(rows))))))
        m = m or max(1, dim // 8)
        if dim % m:
            raise ValueError(f"--m {m} must divide the embedding dim {dim} (PQ splits rows into m parts)")
        train = train_rows or min(rows, max(64 * nlist, 65536))
        if rows < 39 * nlist or train < 39 * nlist:
            raise ValueError(f"ivf-pq with nlist {nlist} needs at least {39 * nlist} training rows "
                             f"(gallery has {rows}, sample {train}); give a smaller --nlist or use --kind flat")
        return cls("ivf-pq", nlist=nlist, m=m, train_rows=train)

    def factory(self) -> str:
        if self.kind == "flat":
            return "IDMap,Flat"
        if self.kind == "hnsw":
            return f"IDMap,HNSW{self.m}"
        quantizer = "_HNSW32" if self.nlist >= 1024 else ""
        return f"IVF{self.nlist}{quantizer},PQ{self.m}"


def index_paths(root) -> tuple[Path, Path]:
    root = Path(root)
    return root / INDEX_FILE, root / META_FILE


def _sample_rows(live_rows: np.ndarray, n: int) -> np.ndarray:
    """n of the live rows, evenly spread (deterministic), ascending."""
    if n >= len(live_rows):
        return live_rows
    return live_rows[np.linspace(0, len(live_rows) - 1, n).round().astype(np.int64)]


def build_index(gallery_dir, kind: str = "auto", nlist: int | None = None, m: int | None = None,
                train_rows: int | None = None, chunk_rows: int = 65536, threads: int = 0,
                progress: bool = True) -> dict:
    """Build the index of the gallery's live rows and write index.faiss + index.json. Returns the meta.

    The gallery is read, not locked: an encode may run meanwhile; the index then records the state it
    read, and searches see it as stale once the encode's shards are listed."""
    from tqdm import tqdm

    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    g = Gallery.open(gallery_dir)
    state = g.state_digest()
    live = g.live_mask()
    live_rows = np.flatnonzero(live)
    if not len(live_rows):
        raise ValueError(f"{gallery_dir}: the gallery is empty; encode or add embeddings first")
    spec = IndexSpec.choose(len(live_rows), g.dim, kind, nlist, m, train_rows)
    index = faiss.index_factory(g.dim, spec.factory(), faiss.METRIC_INNER_PRODUCT)
    log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    log(f"index build: {spec.factory()} over {len(live_rows)} rows x {g.dim}")
    if spec.kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = 80
    if not index.is_trained:
        sample = g.read_rows(_sample_rows(live_rows, spec.train_rows))
        t = time.perf_counter()
        index.train(sample)
        del sample
        log(f"index build: trained on {spec.train_rows} rows in {time.perf_counter() - t:.1f} s")
    bar = tqdm(total=len(g), unit="row", unit_scale=True, desc="index add", disable=not progress,
               file=sys.stderr)
    for start, block in g.iter_chunks(chunk_rows):
        ids = np.arange(start, start + len(block), dtype=np.int64)
        keep = live[start:start + len(block)]
        if not keep.all():
            block, ids = block[keep], ids[keep]
        if len(ids):
            index.add_with_ids(block, ids)
        bar.update(len(keep))
    bar.close()

    path, meta_path = index_paths(gallery_dir)
    tmp = _tmp_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
    try:
        faiss.write_index(index, str(tmp))
        h = hashlib.sha256()
        with open(tmp, "rb+") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
            os.fsync(f.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    meta = {"format": FORMAT, "kind": spec.kind, "factory": spec.factory(), "params": asdict(spec),
            "gallery_state": state, "rows": int(len(live_rows)), "dim": g.dim, "index_sha256": h.hexdigest(),
            "index_bytes": size, "build_seconds": round(time.perf_counter() - t0, 2),
            "faiss": faiss.__version__}
    # Written after the index: a reader in between sees a new file with the old sha256 and scans exactly.
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return meta


# ----- loading and searching ----------------------------------------------------------------------------
_CACHE: dict = {}  # one loaded index, so that repeated searches (a server) do not re-read and re-hash it


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


def load_index(g: Gallery, warn: bool = True):
    """(faiss index, meta) when the gallery has an index that is fresh and intact, else None (with a
    one-line warning for a stale or damaged one when `warn`)."""
    path, meta_path = index_paths(g.root)
    if not meta_path.is_file() or not path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        ok = isinstance(meta, dict) and meta.get("format") == FORMAT
    except (OSError, ValueError):
        ok = False
    if not ok:
        if warn:
            _warn(f"{meta_path}: not a readable index description; searching exactly. Rebuild with "
                   f"`muse-tvr index build --gallery {g.root}`")
        return None
    if meta["gallery_state"] != g.state_digest():
        if warn:
            _warn(f"{path}: index is stale (the gallery changed since it was built); searching exactly. "
                   f"Rebuild with `muse-tvr index build --gallery {g.root}`")
        return None
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, meta["index_sha256"])
    if _CACHE.get("key") == key:
        return _CACHE["index"], meta
    data = path.read_bytes()
    if len(data) != meta["index_bytes"] or hashlib.sha256(data).hexdigest() != meta["index_sha256"]:
        if warn:
            _warn(f"{path}: index file does not match its checksum (damaged, or replaced mid-build); "
                   f"searching exactly. Rebuild with `muse-tvr index build --gallery {g.root}`")
        return None
    faiss = _faiss()
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    del data
    if meta["kind"] != "hnsw" and getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        index = faiss.index_cpu_to_all_gpus(index)  # untested here: no GPU FAISS on the dev box
    _CACHE.update(key=key, index=index)
    return index, meta


def default_rerank(k: int) -> int:
    return max(20 * k, 200)


def index_search(g: Gallery, index, meta: dict, queries: np.ndarray, k: int, nprobe: int | None = None,
                 ef: int | None = None, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k through the index. queries float32 (Q, D) unit rows -> scores float32 (Q, k'), rows int64
    (Q, k'), best first, ties by the lower row, k' = min(k, indexed rows). Scores are exact cosines:
    ivf-pq candidates (the best `rerank` by their codes) are re-scored from the shards."""
    from .retrieval import _top_rows

    faiss = _faiss()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    depth = k
    params = []
    if meta["kind"] == "ivf-pq":
        nprobe = nprobe or 32
        depth = max(k, rerank or default_rerank(k))
        params.append(f"nprobe={nprobe}")
        if meta["params"]["nlist"] >= 1024:
            params.append(f"quantizer_efSearch={max(2 * nprobe, 64)}")
    elif meta["kind"] == "hnsw":
        params.append(f"efSearch={max(ef or 64, k)}")
    if params:
        faiss.ParameterSpace().set_index_parameters(index, ",".join(params))
    depth = min(depth, meta["rows"])
    dist, ids = index.search(q, depth)
    width = min(k, meta["rows"])
    out_s = np.full((len(q), width), -np.inf, np.float32)
    out_r = np.full((len(q), width), -1, np.int64)
    for i in range(len(q)):
        rows = ids[i][ids[i] >= 0]
        scores = g.read_rows(rows) @ q[i] if meta["kind"] == "ivf-pq" else dist[i][ids[i] >= 0]
        s, r = _top_rows(scores.astype(np.float32), rows, k)
        out_s[i, :len(s)], out_r[i, :len(r)] = s, r
    return out_s, out_r


def search(g: Gallery, queries: np.ndarray, k: int, chunk_rows: int = 16384, exact: bool = False,
           nprobe: int | None = None, ef: int | None = None, rerank: int | None = None
           ) -> tuple[np.ndarray, np.ndarray, str]:
    """The gallery's top-k for float32 (Q, D) unit queries: through its index when one is present and
    fresh (and not `exact`), else the exact chunked scan. Returns (scores, rows, how), how = "exact" or
    the index kind."""
    from .retrieval import topk_search

    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != g.dim:
        raise ValueError(f"queries must be (Q, {g.dim}) for this gallery, got shape {q.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    loaded = None if exact else load_index(g)
    if loaded is not None:
        s, r = index_search(g, loaded[0], loaded[1], q, k, nprobe=nprobe, ef=ef, rerank=rerank)
        return s, r, loaded[1]["kind"]
    live = g.live_mask() if g.has_superseded else None
    s, r = topk_search(q, g.iter_chunks(chunk_rows), k, live=live)
    return s, r, "exact"
