"""Search and evaluation over embeddings (docs/model.md section 6).

- `topk_search`: exact top-k of query @ gallery^T over gallery chunks, in bounded memory. Ties are
  broken by the lower gallery row, so the result does not depend on the chunk size.
- `compute_metrics`: CLIP4Clip's retrieval metrics for a square similarity matrix whose diagonal holds
  the matching pairs: R@1/5/10 (percent), median rank and mean rank (1-based).
- `retrieval_metrics`: text-to-video on `sim`, video-to-text on `sim.T`, as the reference evaluates.
- `read_caption_csv`: MSR-VTT test lists (columns key, vid_key, video_id, sentence).
"""
from __future__ import annotations

import csv
import os
from typing import Iterable

import numpy as np


# ----- search -----------------------------------------------------------------------------------------
def _top_rows(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k of one query's candidates, ordered by score descending then row ascending."""
    if len(scores) > k:
        # Keep everything strictly above the k-th value plus the lowest-row ties AT it: exactly the
        # set a full (score desc, row asc) sort would keep, without sorting everything.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)
        ties = ties[np.argsort(rows[ties], kind="stable")][:k - len(above)]
        sel = np.concatenate([above, ties])
        scores, rows = scores[sel], rows[sel]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


def topk_search(queries: np.ndarray, chunks: Iterable[tuple[int, np.ndarray]], k: int,
                live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products.

    queries: float32 (Q, D). chunks: (first row, float32 (n, D)) blocks covering the gallery in any
    order (e.g. `Gallery.iter_chunks`). live: optional bool (rows,) mask; False rows are never returned.
    Returns scores float32 (Q, k') and rows int64 (Q, k') with k' = min(k, live rows), best first,
    ties broken by the lower row. NaN scores never rank. Memory: O(Q * chunk + Q * k).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"queries must be (Q, D), got shape {q.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    nq = q.shape[0]
    best_s = [np.empty(0, np.float32) for _ in range(nq)]
    best_r = [np.empty(0, np.int64) for _ in range(nq)]
    for start, block in chunks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != q.shape[1]:
            raise ValueError(f"gallery block of shape {block.shape} does not match queries of dim {q.shape[1]}")
        rows = np.arange(start, start + len(block), dtype=np.int64)
        scores = q @ block.T  # (Q, n)
        valid = ~np.isnan(scores)
        if live is not None:
            valid &= live[start:start + len(block)][None, :]
        for i in range(nq):
            v = valid[i]
            s, r = _top_rows(scores[i][v], rows[v], k)
            best_s[i], best_r[i] = _top_rows(np.concatenate([best_s[i], s]), np.concatenate([best_r[i], r]), k)
    width = min((len(s) for s in best_s), default=0)
    out_s = np.stack([s[:width] for s in best_s]) if nq else np.zeros((0, 0), np.float32)
    out_r = np.stack([r[:width] for r in best_r]) if nq else np.zeros((0, 0), np.int64)
    return out_s.astype(np.float32), out_r


# ----- metrics --------------------------------------------------------------------------------------
def compute_metrics(sim: np.ndarray) -> dict:
    """CLIP4Clip `compute_metrics` for a square (N, N) matrix, row i's match in column i.

    A row's rank is the number of entries in it strictly greater than its diagonal entry (0-based). As
    in the reference, a row whose diagonal value also appears c > 1 times in the row (exact ties)
    contributes the c positions rank, rank+1, ..., rank+c-1, and a row whose diagonal is NaN contributes
    none; R@K = 100 * #(ranks < K) / #ranks; MdR = median(ranks) + 1; MnR = mean(ranks) + 1.
    Returns {"R1", "R5", "R10", "MdR", "MnR", "ranks" (1-based, per contributed position)}.
    """
    x = np.asarray(sim, dtype=np.float64) if not np.issubdtype(np.asarray(sim).dtype, np.floating) \
        else np.asarray(sim)
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] == 0:
        raise ValueError(f"similarity must be a non-empty square matrix (row i matches column i), "
                         f"got shape {x.shape}")
    d = np.diag(x)[:, None]
    greater = (x > d).sum(axis=1)
    ties = (x == d).sum(axis=1)  # includes the diagonal itself; 0 when the diagonal is NaN
    ranks = np.concatenate([np.arange(g, g + c) for g, c in zip(greater, ties)]).astype(np.int64)
    if ranks.size == 0:
        raise ValueError("every diagonal entry is NaN: no rank can be computed")
    return {
        **{f"R{k}": float(np.sum(ranks < k)) * 100 / len(ranks) for k in (1, 5, 10)},
        "MdR": float(np.median(ranks) + 1),
        "MnR": float(np.mean(ranks) + 1),
        "ranks": (ranks + 1).tolist(),
    }


def retrieval_metrics(sim: np.ndarray) -> dict:
    """{"t2v": compute_metrics(sim), "v2t": compute_metrics(sim.T)} for sim = (texts, videos)."""
    sim = np.asarray(sim)
    return {"t2v": compute_metrics(sim), "v2t": compute_metrics(sim.T)}


def format_metrics(name: str, m: dict) -> str:
    return (f"{name}: R@1 {m['R1']:.1f}  R@5 {m['R5']:.1f}  R@10 {m['R10']:.1f}  "
            f"MdR {m['MdR']:.1f}  MnR {m['MnR']:.1f}")


# ----- caption lists ----------------------------------------------------------------------------------
def read_caption_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(video_id, sentence) pairs from an MSR-VTT style CSV with a header holding `video_id` and
    `sentence` (the 1k-A test file has key, vid_key, video_id, sentence). Row order is kept."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"captions file not found: {path}")
    # utf-8-sig: Excel starts its UTF-8 CSVs with a byte order mark, which would stick to the first header.
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in ("video_id", "sentence") if c not in fields]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; found {fields}. Expected an MSR-VTT "
                                 f"style CSV with header key,vid_key,video_id,sentence")
            pairs = []
            for line, row in enumerate(reader, start=2):
                vid, sent = (row.get("video_id") or "").strip(), row.get("sentence")
                if not vid or sent is None:
                    raise ValueError(f"{path}:{line}: empty video_id or sentence")
                pairs.append((vid, sent))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the CSV as UTF-8") from None
    if not pairs:
        raise ValueError(f"{path}: no caption rows")
    return pairs
