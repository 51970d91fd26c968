"""Metrics on hand-made matrices with known ranks, chunked top-k against a full sort, caption CSVs, and
the encode -> search -> evaluate command line end to end (tiny random model)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from muse_tvr.engine.gallery import Gallery
from muse_tvr.engine.retrieval import (compute_metrics, read_caption_csv, retrieval_metrics,
                                       topk_search)


# ----- metrics -----------------------------------------------------------------------------------------
def matrix_with_ranks(ranks: list[int], seed: int = 0) -> np.ndarray:
    """Square matrix whose row i has its diagonal entry at 0-based rank ranks[i], no ties."""
    rng = np.random.default_rng(seed)
    n = len(ranks)
    x = np.empty((n, n))
    for i, r in enumerate(ranks):
        values = np.sort(rng.permutation(n * 10)[:n].astype(float))[::-1]  # distinct, descending
        others = [j for j in range(n) if j != i]
        rng.shuffle(others)
        x[i, i] = values[r]
        rest = np.delete(values, r)
        x[i, others] = rest
    return x


def test_metrics_known_ranks():
    ranks = [0, 0, 1, 4, 9, 12, 2, 0, 5, 19, 3, 0, 7, 0, 15, 1, 0, 11, 6, 0]
    m = compute_metrics(matrix_with_ranks(ranks))
    r = np.array(ranks)
    assert m["ranks"] == (r + 1).tolist()
    assert m["R1"] == pytest.approx(100 * 7 / 20)
    assert m["R5"] == pytest.approx(100 * 12 / 20)  # ranks < 5: 0 x7, 1 x2, 2, 3, 4
    assert m["R10"] == pytest.approx(100 * 16 / 20)  # plus 5, 6, 7, 9
    assert m["MdR"] == pytest.approx(np.median(r) + 1) == 3.5
    assert m["MnR"] == pytest.approx(r.mean() + 1)


def test_metrics_tiny_examples_by_hand():
    sim = np.array([[0.9, 0.1, 0.2],    # row 0: diagonal best -> rank 1
                    [0.8, 0.3, 0.5],    # row 1: 0.3 below 0.8 and 0.5 -> rank 3
                    [0.1, 0.7, 0.6]])   # row 2: 0.6 below 0.7 -> rank 2
    m = compute_metrics(sim)
    assert m["ranks"] == [1, 3, 2]
    assert m["R1"] == pytest.approx(100 / 3) and m["R5"] == 100.0
    assert m["MdR"] == 2.0 and m["MnR"] == 2.0
    both = retrieval_metrics(sim)
    # video-to-text reads columns: col 0 (0.9 is its best) rank 1, col 1 (0.3 below 0.7) rank 2,
    # col 2 (0.6 above 0.2 and 0.5) rank 1
    assert both["v2t"]["ranks"] == [1, 2, 1]
    assert both["t2v"]["ranks"] == [1, 3, 2]


def test_metrics_ties_counted_like_reference():
    # Row 1's diagonal 0.5 appears twice: the reference's `np.where(sorted - diag == 0)` finds both
    # positions, so that row contributes ranks 2 and 3 and the denominator becomes 4.
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.6, 0.5, 0.5],
                    [0.1, 0.2, 0.3]])
    m = compute_metrics(sim)
    assert m["ranks"] == [1, 2, 3, 1]
    assert m["R1"] == 50.0 and m["MnR"] == pytest.approx(7 / 4)
    nan = sim.copy()
    nan[1, 1] = np.nan  # a NaN diagonal contributes no rank
    assert compute_metrics(nan)["ranks"] == [1, 1]


def test_metrics_match_double_argsort_without_ties():
    rng = np.random.default_rng(1)
    for n in (1, 7, 50):
        sim = rng.standard_normal((n, n)).astype(np.float32)
        order = np.argsort(-sim, axis=1, kind="stable")
        ranks = np.argsort(order, axis=1)[np.arange(n), np.arange(n)]  # position of the diagonal
        m = compute_metrics(sim)
        assert m["ranks"] == (ranks + 1).tolist()
        assert m["R10"] == pytest.approx(100 * np.mean(ranks < 10))


def test_metrics_reject_non_square():
    with pytest.raises(ValueError, match="square"):
        compute_metrics(np.zeros((2, 3)))


# ----- top-k ---------------------------------------------------------------------------------------------
def full_sort_topk(q, g, k, live=None):
    s = q @ g.T
    out_s, out_r = [], []
    rows = np.arange(len(g))
    for i in range(len(q)):
        keep = ~np.isnan(s[i]) if live is None else (~np.isnan(s[i]) & live)
        order = np.lexsort((rows[keep], -s[i][keep]))[:k]
        out_s.append(s[i][keep][order])
        out_r.append(rows[keep][order])
    return np.stack(out_s), np.stack(out_r)


def chunks_of(g, size):
    return [(a, g[a:a + size]) for a in range(0, len(g), size)]


def test_topk_stable_across_chunk_sizes_with_ties():
    rng = np.random.default_rng(2)
    # coarse values so that many scores tie exactly; duplicate rows tie too
    g = rng.integers(-2, 3, (1000, 8)).astype(np.float32)
    g[500:520] = g[0]
    q = rng.integers(-2, 3, (5, 8)).astype(np.float32)
    ref_s, ref_r = full_sort_topk(q, g, 25)
    for size in (1, 7, 64, 333, 1000, 5000):
        s, r = topk_search(q, chunks_of(g, size), 25)
        assert np.array_equal(r, ref_r), f"chunk {size}"
        assert np.array_equal(s, ref_s)
    # chunks may arrive in any order
    s, r = topk_search(q, chunks_of(g, 100)[::-1], 25)
    assert np.array_equal(r, ref_r)


def test_topk_live_mask_nan_and_small_gallery():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((50, 16)).astype(np.float32)
    g[7] = np.nan
    q = rng.standard_normal((3, 16)).astype(np.float32)
    live = np.ones(50, bool)
    live[::2] = False
    s, r = topk_search(q, chunks_of(g, 9), 10, live=live)
    ref_s, ref_r = full_sort_topk(q, g, 10, live)
    assert np.array_equal(r, ref_r) and not np.isin(r, [7]).any() and (r % 2 == 1).all()
    s, r = topk_search(q, chunks_of(g, 9), 100)  # k larger than the gallery: all 49 finite rows
    assert r.shape == (3, 49)
    with pytest.raises(ValueError, match="dim"):
        topk_search(q[:, :8], chunks_of(g, 9), 3)


def test_gallery_search_over_shards(tmp_path):
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((20000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    with Gallery.create_or_open(tmp_path / "g", {"fingerprint": "x" * 64}, 32) as g:
        for a in range(0, 20000, 6000):  # 4 shards, the last one short
            g.add(emb[a:a + 6000], [{"key": f"v{i}", "path": f"v{i}"} for i in range(a, min(a + 6000, 20000))])
    g = Gallery.open(tmp_path / "g")
    q = rng.standard_normal((4, 32)).astype(np.float32)
    ref_s, ref_r = full_sort_topk(q, emb, 10)
    for rows in (1000, 4096, 65536):
        s, r = topk_search(q, g.iter_chunks(rows), 10)
        assert np.array_equal(r, ref_r)
        np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-6)
    assert g.entry(int(r[0, 0]))["path"] == f"v{r[0, 0]}"


# ----- captions --------------------------------------------------------------------------------------------
def test_read_caption_csv(tmp_path):
    p = tmp_path / "test.csv"
    p.write_text('key,vid_key,video_id,sentence\nret0,msr7020,video7020,"a woman, singing"\n'
                 "ret1,msr7021,video7021,a cat\n")
    assert read_caption_csv(p) == [("video7020", "a woman, singing"), ("video7021", "a cat")]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,caption\n1,x\n")
    with pytest.raises(ValueError, match="missing column"):
        read_caption_csv(bad)
    with pytest.raises(FileNotFoundError):
        read_caption_csv(tmp_path / "none.csv")


# ----- the command line end to end ----------------------------------------------------------------------------
def test_encode_search_evaluate_cli(tmp_path, capsys):
    from muse_tvr.cli import main
    from test_video import make_audio_only, make_clip

    vids = tmp_path / "videos"
    vids.mkdir()
    for i, (sec, fps) in enumerate([(2, 25), (3, 30), (1.5, 29.97)]):
        make_clip(vids / f"video{i}.mp4", sec, fps, seed=i)
    (vids / "video9.mp4").write_bytes(b"\x00" * 100)  # corrupt
    make_audio_only(vids / "sound.mp4")
    gallery = tmp_path / "gallery"

    assert main(["encode", str(vids), "--out", str(gallery), "--backbone", "tiny", "--batch-size", "8"]) == 0
    out, err = capsys.readouterr()
    assert "RANDOM WEIGHTS" in err
    assert "video9.mp4" in err and "sound.mp4" in err and "has no video stream" in err
    assert "encoded 3" in out and "failed 2" in out
    g = Gallery.open(gallery)
    assert len(g) == 3 and g.model_info["weight_sources"]["head"] == "random"
    assert sorted(e["path"].rsplit("/", 1)[-1] for e in g.entries()) == ["video0.mp4", "video1.mp4",
                                                                         "video2.mp4"]
    assert {e["frames_used"] for e in g.entries()} == {2, 3}

    assert main(["search", "a man is playing guitar", "--gallery", str(gallery), "-k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    hits = res["results"][0]["hits"]
    assert res["random_weights"] == ["clip", "pyramid", "head"]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["score"] >= hits[1]["score"]
    # the same answer with tiny chunks
    assert main(["search", "a man is playing guitar", "--gallery", str(gallery), "-k", "2", "--json",
                 "--chunk-rows", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["hits"] == hits

    captions = tmp_path / "test.csv"
    captions.write_text("key,vid_key,video_id,sentence\n" + "".join(
        f"ret{i},msr{i},video{i},caption number {i}\n" for i in range(3)))
    # the encode gallery doubles as the evaluation cache: nothing is decoded again
    assert main(["evaluate", "--videos", str(vids), "--captions", str(captions), "--backbone", "tiny",
                 "--cache", str(gallery), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["encoded_now"] == 0 and out["from_cache"] == 3
    assert out["random_weights"] == ["clip", "pyramid", "head"]
    for d in ("t2v", "v2t"):
        assert set(out[d]) >= {"R1", "R5", "R10", "MdR", "MnR"} and len(out[d]["ranks"]) == 3
        assert out[d]["R5"] == 100.0  # 3 candidates: every rank is within 5

    captions.write_text("key,vid_key,video_id,sentence\nret0,msr0,video0,x\nret1,msr1,video9,y\n")
    assert main(["evaluate", "--videos", str(vids), "--captions", str(captions), "--backbone", "tiny",
                 "--cache", str(gallery)]) == 2
    assert "video9.mp4" in capsys.readouterr().err
