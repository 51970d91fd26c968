"""The FAISS index beside a gallery: recall against the exact scan on clustered data for every kind,
exact scores, superseded rows, and stale or damaged indexes falling back to the exact scan loudly."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from muse_tvr.cli import main  # noqa: E402
from muse_tvr.engine import ann_index  # noqa: E402
from muse_tvr.engine.gallery import Gallery  # noqa: E402
from muse_tvr.engine.gallery_io import RAW_INFO  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ann_search import Clusters, recall  # noqa: E402  (the benchmark's data, at test size)

ROWS, DIM, K = 12000, 64, 10


@pytest.fixture(scope="module")
def data():
    gen = Clusters(ROWS, DIM, seed=3, per_centre=400)
    return gen.draw(ROWS, stream=1), gen.draw(40, stream=2)


def make(root, emb, start=0, chunk=5000):
    with Gallery.create_or_open(root, RAW_INFO, emb.shape[1]) as g:
        for a in range(0, len(emb), chunk):
            g.add(emb[a:a + chunk], [{"key": f"v{start + r}"} for r in range(a, min(a + chunk, len(emb)))])
    return Gallery.open(root)


def exact(g, q, k=K):
    return ann_index.search(g, q, k, exact=True)


@pytest.mark.parametrize("kind, extra", [("flat", {}), ("ivf-pq", {"nlist": 64}), ("hnsw", {})],
                         ids=["flat", "ivf-pq-nlist64", "hnsw"])
def test_recall_against_exact_on_clustered_data(tmp_path, data, kind, extra):
    emb, q = data
    g = make(tmp_path / "g", emb)
    meta = ann_index.build_index(g.root, kind, progress=False, **extra)
    assert meta["rows"] == ROWS and meta["kind"] == kind
    es, er, _ = exact(g, q)
    s, r, how = ann_index.search(Gallery.open(g.root), q, K)
    assert how == kind
    assert recall(r, er) >= 0.95
    # returned scores are the true cosines of the returned rows (re-scored from the shards for ivf-pq)
    assert np.allclose(s, np.einsum("qd,qkd->qk", q, emb[r]), atol=1e-5)
    assert (np.diff(s, axis=1) <= 1e-7).all()  # best first
    if kind == "flat":
        assert np.array_equal(r, er)


def test_ivf_pq_knobs_trade_recall(tmp_path, data):
    """nprobe 1 with no re-ranking depth must be worse than the defaults: the knobs reach FAISS."""
    emb, q = data
    g = make(tmp_path / "g", emb)
    ann_index.build_index(g.root, "ivf-pq", nlist=64, m=4, progress=False)
    _, er, _ = exact(g, q)
    _, low, _ = ann_index.search(g, q, K, nprobe=1, rerank=K)
    _, high, _ = ann_index.search(g, q, K, nprobe=64, rerank=400)
    assert recall(low, er) < recall(high, er) and recall(high, er) >= 0.99


def test_stale_index_falls_back_to_exact_with_a_warning(tmp_path, data, capsys):
    emb, q = data
    g = make(tmp_path / "g", emb[:6000])
    ann_index.build_index(g.root, "flat", progress=False)
    assert main(["index", "info", "--gallery", str(g.root)]) == 0
    make(g.root, emb[6000:], start=6000)  # more rows: the index no longer covers the gallery
    g = Gallery.open(g.root)
    with pytest.warns(UserWarning, match="index is stale"):
        s, r, how = ann_index.search(g, q, K)
    assert how == "exact"
    es, er, _ = exact(g, q)
    assert np.array_equal(r, er) and (r >= 6000).any()  # the new rows are found
    capsys.readouterr()
    assert main(["index", "info", "--gallery", str(g.root)]) == 1
    assert '"fresh": false' in capsys.readouterr().out
    np.save(tmp_path / "Q.npy", q[:2])
    assert main(["search", "--query-npy", str(tmp_path / "Q.npy"), "--gallery", str(g.root), "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "index is stale" in err and "via exact" in err
    ann_index.build_index(g.root, "flat", progress=False)  # rebuilt: fresh again
    assert ann_index.search(Gallery.open(g.root), q, K)[2] == "flat"
    with Gallery.create_or_open(g.root, RAW_INFO, DIM) as w:  # compaction also changes the state
        w.compact(small_rows=10 ** 9)
    with pytest.warns(UserWarning, match="index is stale"):
        assert ann_index.search(Gallery.open(g.root), q, K)[2] == "exact"


def test_damaged_index_is_not_used(tmp_path, data):
    emb, q = data
    g = make(tmp_path / "g", emb[:3000])
    ann_index.build_index(g.root, "flat", progress=False)
    ann_index._CACHE.clear()
    path = g.root / "index.faiss"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        assert ann_index.search(g, q, K)[2] == "exact"
    (g.root / "index.json").write_text("{")
    with pytest.warns(UserWarning, match="not a readable index description"):
        assert ann_index.search(g, q, K)[2] == "exact"


def test_exact_flag_and_superseded_rows(tmp_path, data, capsys):
    emb, q = data
    g = make(tmp_path / "g", emb[:3000])
    # v0..v99 re-added with the rows of v2900..: the old rows are superseded and must never come back
    with Gallery.create_or_open(g.root, RAW_INFO, DIM) as w:
        w.add(emb[2900:3000], [{"key": f"v{i}"} for i in range(100)])
    g = Gallery.open(g.root)
    ann_index.build_index(g.root, "hnsw", progress=False)
    meta = json.loads((g.root / "index.json").read_text())
    assert meta["rows"] == 3000
    s, r, how = ann_index.search(g, q, K)
    assert how == "hnsw" and not np.isin(r, np.arange(100)).any()
    assert ann_index.search(g, q, K, exact=True)[2] == "exact"
    np.save(tmp_path / "Q.npy", q[:1])
    capsys.readouterr()
    assert main(["search", "--query-npy", str(tmp_path / "Q.npy"), "--gallery", str(g.root), "--exact"]) == 0
    assert "via exact" in capsys.readouterr().err


def test_bad_build_options(tmp_path, data):
    emb, _ = data
    g = make(tmp_path / "g", emb[:2000])
    with pytest.raises(ValueError, match="must divide the embedding dim"):
        ann_index.build_index(g.root, "ivf-pq", nlist=16, m=7, progress=False)
    with pytest.raises(ValueError, match="needs at least 39000 training rows"):
        ann_index.build_index(g.root, "ivf-pq", nlist=1000, progress=False)
    assert not (g.root / "index.faiss").exists()
