"""Embeddings in and out of a gallery (`gallery add-embeddings`, `gallery export`), raw galleries, and
`search --query-npy --json`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from muse_tvr.cli import main
from muse_tvr.engine.gallery import Gallery, GalleryError
from muse_tvr.engine.gallery_io import RAW_FINGERPRINT, add_embeddings, export_embeddings


def unit_rows(n, dim=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_inputs(tmp_path, emb, keys, name="E"):
    npy, txt = tmp_path / f"{name}.npy", tmp_path / f"{name}.txt"
    np.save(npy, emb)
    txt.write_text("".join(k + "\n" for k in keys), encoding="utf-8")
    return npy, txt


def test_add_export_round_trip_in_chunks(tmp_path):
    emb = unit_rows(23)
    keys = [f"clip {i} é" for i in range(23)]  # spaces and non-ASCII survive
    npy, txt = write_inputs(tmp_path, emb, keys)
    gdir = tmp_path / "g"
    assert main(["gallery", "add-embeddings", "--gallery", str(gdir), "--npy", str(npy), "--keys", str(txt),
                 "--chunk-rows", "5"]) == 0
    g = Gallery.open(gdir)
    assert g.model_info["fingerprint"] == RAW_FINGERPRINT
    assert len(g.manifest["shards"]) == 5  # ceil(23 / 5): the .npy was copied five rows at a time
    assert main(["gallery", "export", "--gallery", str(gdir), "--npy", str(tmp_path / "X.npy"),
                 "--keys", str(tmp_path / "X.txt")]) == 0
    out = np.load(tmp_path / "X.npy")
    assert out.dtype == np.float32 and np.array_equal(out, emb)
    assert (tmp_path / "X.txt").read_text(encoding="utf-8").splitlines() == keys
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_export_skips_superseded_rows_and_keeps_row_order(tmp_path):
    emb = unit_rows(6)
    gdir = tmp_path / "g"
    add_embeddings(gdir, *write_inputs(tmp_path, emb[:4], list("abcd")), progress=False)
    add_embeddings(gdir, *write_inputs(tmp_path, emb[4:], list("bx"), name="F"), progress=False)
    n = export_embeddings(gdir, tmp_path / "X.npy", tmp_path / "X.txt", chunk_rows=3, progress=False)
    assert n == 5
    assert (tmp_path / "X.txt").read_text().split() == ["a", "c", "d", "b", "x"]
    assert np.array_equal(np.load(tmp_path / "X.npy"), emb[[0, 2, 3, 4, 5]])


def test_export_never_overwrites(tmp_path):
    gdir = tmp_path / "g"
    add_embeddings(gdir, *write_inputs(tmp_path, unit_rows(3), list("abc")), progress=False)
    mine = tmp_path / "mine.npy"
    mine.write_bytes(b"user data")
    with pytest.raises(ValueError, match="exists"):
        export_embeddings(gdir, mine, tmp_path / "k.txt", progress=False)
    assert mine.read_bytes() == b"user data" and not (tmp_path / "k.txt").exists()


@pytest.mark.parametrize("case, match", [
    ("float64", "expected float32"),
    ("1d", "expected float32"),
    ("few-keys", "2 keys for 3 embedding rows"),
    ("many-keys", "more than 3 keys"),
    ("empty-key", ":2: empty key"),
    ("not-unit", "rows 0..2: embedding row 1 .* norm"),
    ("nan", "non-finite"),
])
def test_bad_inputs_are_refused_by_name(tmp_path, case, match):
    emb, keys = unit_rows(3), ["a", "b", "c"]
    if case == "float64":
        emb = emb.astype(np.float64)
    elif case == "1d":
        emb = emb[0]
    elif case == "few-keys":
        keys = keys[:2]
    elif case == "many-keys":
        keys = keys + ["d"]
    elif case == "empty-key":
        keys[1] = ""
    elif case == "not-unit":
        emb[1] *= 2
    elif case == "nan":
        emb[2, 0] = np.nan
    npy, txt = write_inputs(tmp_path, emb, keys)
    with pytest.raises(ValueError, match=match):
        add_embeddings(tmp_path / "g", npy, txt, progress=False)
    g = tmp_path / "g"
    assert not g.exists() or len(Gallery.open(g)) == 0


def test_model_galleries_refuse_raw_embeddings_and_raw_refuse_models(tmp_path):
    npy, txt = write_inputs(tmp_path, unit_rows(3), list("abc"))
    model_dir = tmp_path / "model-gallery"
    Gallery.create_or_open(model_dir, {"fingerprint": "f" * 64, "name": "tiny"}, 16).close()
    with pytest.raises(GalleryError, match="refusing raw embeddings"):
        add_embeddings(model_dir, npy, txt, progress=False)
    raw = tmp_path / "raw"
    add_embeddings(raw, npy, txt, progress=False)
    with pytest.raises(GalleryError, match="gallery holds raw embeddings"):
        add_embeddings(raw, npy, txt, model_info={"fingerprint": "f" * 64, "name": "tiny"}, progress=False)
    with pytest.raises(GalleryError, match="dim 16"):
        add_embeddings(raw, *write_inputs(tmp_path, unit_rows(2, dim=8), list("xy"), name="F"), progress=False)
    # the same model's embeddings are accepted
    add_embeddings(model_dir, npy, txt, model_info={"fingerprint": "f" * 64, "name": "tiny"}, progress=False)
    assert len(Gallery.open(model_dir)) == 3


def test_search_query_npy_json_matches_brute_force(tmp_path, capsys):
    emb = unit_rows(300, seed=1)
    gdir = tmp_path / "g"
    add_embeddings(gdir, *write_inputs(tmp_path, emb, [f"k{i}" for i in range(300)]), chunk_rows=64,
                   progress=False)
    q = unit_rows(4, seed=2) * 3  # not unit: search normalises query vectors
    np.save(tmp_path / "Q.npy", q)
    capsys.readouterr()
    assert main(["search", "--query-npy", str(tmp_path / "Q.npy"), "--gallery", str(gdir), "-k", "5",
                 "--json", "--chunk-rows", "50"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert isinstance(res, list) and len(res) == 4
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    for qi, hits in enumerate(res):
        assert [set(h) for h in hits] == [{"key", "score"}] * 5
        s = emb @ qn[qi]
        best = np.argsort(-s, kind="stable")[:5]
        assert [h["key"] for h in hits] == [f"k{i}" for i in best]
        assert np.allclose([h["score"] for h in hits], s[best], atol=1e-6)
    # a text query on a raw gallery says what to do instead
    assert main(["search", "a dog", "--gallery", str(gdir)]) == 2
    assert "--query-npy" in capsys.readouterr().err
    np.save(tmp_path / "Q8.npy", unit_rows(1, dim=8))
    assert main(["search", "--query-npy", str(tmp_path / "Q8.npy"), "--gallery", str(gdir)]) == 2
    assert "(Q, 16)" in capsys.readouterr().err
    (tmp_path / "junk.npy").write_text("not numpy")
    assert main(["search", "--query-npy", str(tmp_path / "junk.npy"), "--gallery", str(gdir)]) == 2
    assert "not a .npy array" in capsys.readouterr().err


def test_read_rows_across_shards_any_order(tmp_path):
    emb = unit_rows(50)
    gdir = tmp_path / "g"
    add_embeddings(gdir, *write_inputs(tmp_path, emb, [f"k{i}" for i in range(50)]), chunk_rows=16,
                   progress=False)
    g = Gallery.open(gdir)
    rows = np.array([49, 0, 15, 16, 17, 17, 3, 32, 31, 48, 1, 2])  # runs, repeats, shard edges
    assert np.array_equal(g.read_rows(rows), emb[rows])
    assert g.read_rows(np.array([], np.int64)).shape == (0, 16)
    with pytest.raises(IndexError):
        g.read_rows(np.array([50]))
    shard = gdir / "shard-000002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(GalleryError, match="shard-000002"):
        Gallery.open(gdir).read_rows(np.array([20]))
