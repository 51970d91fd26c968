"""Gallery store: atomic shards, crash leftovers, the writer lock, fingerprints, and an encode that is
interrupted and resumed without losing or duplicating anything."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from muse_tvr.commands import build_model, encode_into_gallery
from muse_tvr.engine import gallery as gallery_mod
from muse_tvr.engine.gallery import Gallery, GalleryError, model_fingerprint


def _rows(n, dim=8, seed=0):
    e = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _entries(names):
    return [{"key": k, "path": k, "size": 1, "mtime_ns": 1} for k in names]


FP = {"fingerprint": "a" * 64, "name": "test"}


def test_add_reopen_and_read_back(tmp_path):
    emb = _rows(10)
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        g.add(emb[:4], _entries("abcd"))
        g.add(emb[4:], _entries("efghij"))
        assert (tmp_path / "gallery.lock").exists()
    Gallery.create_or_open(tmp_path, FP, 8).close()  # the lock was released
    g = Gallery.open(tmp_path)
    assert len(g) == 10 and g.dim == 8
    assert np.array_equal(g.embeddings(), emb)
    assert np.array_equal(g.embeddings([9, 0, 5]), emb[[9, 0, 5]])
    assert [e["key"] for e in g.entries()] == list("abcdefghij")
    assert g.entry(5)["key"] == "f"
    with pytest.raises(ValueError, match=r"\(2, 8\)"):
        Gallery.create_or_open(tmp_path, FP, 8).add(emb[:3], _entries("xy"))


def test_damaged_shard_is_reported(tmp_path):
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        g.add(_rows(4), _entries("abcd"))
    shard = tmp_path / "shard-000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(GalleryError, match="shard-000001.safetensors"):
        list(Gallery.open(tmp_path).iter_chunks())
    shard.write_bytes(b"nonsense")
    with pytest.raises(GalleryError, match="not a gallery shard"):
        list(Gallery.open(tmp_path).iter_chunks())


def test_other_model_is_refused(tmp_path):
    Gallery.create_or_open(tmp_path, FP, 8).close()
    with pytest.raises(GalleryError, match="not the current model"):
        Gallery.create_or_open(tmp_path, {"fingerprint": "b" * 64, "name": "other"}, 8)
    with pytest.raises(GalleryError, match="not a gallery"):
        Gallery.open(tmp_path / "nothing")


def test_crash_between_shard_and_manifest(tmp_path, monkeypatch):
    """A writer dying after a shard's files are written but before the manifest lists them loses only that
    batch: readers see the previous state, and the next writer removes exactly the files it reserved."""
    emb = _rows(6)
    g = Gallery.create_or_open(tmp_path, FP, 8)
    g.add(emb[:3], _entries("abc"))
    real = gallery_mod.atomic_write_bytes
    saves = {"n": 0}

    def dying(path, data):
        if path.name == "gallery.json":
            saves["n"] += 1
            if saves["n"] == 2:  # the first save reserves the shard name; the second would list it
                raise KeyboardInterrupt("killed")
        real(path, data)

    monkeypatch.setattr(gallery_mod, "atomic_write_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        g.add(emb[3:], _entries("def"))
    monkeypatch.setattr(gallery_mod, "atomic_write_bytes", real)
    (tmp_path / ".shard-000002.json.tmp-1-ab").write_text("half")  # a temp file a crash can leave
    (tmp_path / ".gallery.json.tmp-1-ab").write_text("half")
    assert (tmp_path / "shard-000002.safetensors").exists()  # the orphan
    r = Gallery.open(tmp_path)
    assert len(r) == 3 and np.array_equal(r.embeddings(), emb[:3])
    g.close()
    with Gallery.create_or_open(tmp_path, FP, 8) as g2:
        assert not (tmp_path / "shard-000002.safetensors").exists()
        assert not (tmp_path / ".shard-000002.json.tmp-1-ab").exists()
        assert not (tmp_path / ".gallery.json.tmp-1-ab").exists()
        g2.add(emb[3:], _entries("def"))
    assert [e["key"] for e in Gallery.open(tmp_path).entries()] == list("abcdef")


def test_lock_refuses_a_live_writer_and_is_free_when_it_dies(tmp_path):
    Gallery.create_or_open(tmp_path, FP, 8).close()
    code = ("import sys, time; from muse_tvr.engine.gallery import Gallery; "
            f"g = Gallery.create_or_open({str(tmp_path)!r}, {FP!r}, 8); print('locked', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(GalleryError, match=f"pid {holder.pid}"):
            Gallery.create_or_open(tmp_path, FP, 8)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: the OS released its lock
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        g.add(_rows(1), _entries("a"))


def test_superseded_rows_and_compact(tmp_path):
    emb = _rows(8)
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        g.add(emb[:3], _entries("abc"))
        g.add(emb[3:5], _entries("de"))
        g.add(emb[5:6], _entries("b"))  # "b" re-encoded (the file changed)
        assert g.live_mask().tolist() == [True, False, True, True, True, True]
        assert g.compact()
        assert len(g.manifest["shards"]) == 1
        assert [e["key"] for e in g.entries()] == ["a", "c", "d", "e", "b"]
        assert np.array_equal(g.embeddings(), emb[[0, 2, 3, 4, 5]])
        assert not g.compact()
    shard_files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("shard-"))
    assert len(shard_files) == 2  # the merged shard's .safetensors and .json only


def test_fingerprint_tracks_weights():
    from muse_tvr.engine.config import TINY
    from muse_tvr.engine.model import MuseModel

    torch.manual_seed(1)
    a = MuseModel(TINY)
    torch.manual_seed(1)
    b = MuseModel(TINY)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.head.MS_mamba[0].temporal_fc.bias[3] += 1e-6
    assert model_fingerprint(a) != model_fingerprint(b)
    # the commands seed random weights, so reruns build the same model
    spec = {"backbone": "tiny", "seed": 0}
    assert build_model(spec)[1]["fingerprint"] == build_model(spec)[1]["fingerprint"]
    assert build_model(spec)[1]["fingerprint"] != build_model({"backbone": "tiny", "seed": 1})[1]["fingerprint"]


# ----- interrupted and resumed encode ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    """TINY at 2 frames: the cheapest model with the real token geometry."""
    from muse_tvr.engine.config import TINY
    from muse_tvr.engine.model import MuseModel

    torch.manual_seed(0)
    model = MuseModel(TINY.replace(max_frames=2)).eval()
    info = {"fingerprint": model_fingerprint(model), "name": "tiny-2f",
            "weight_sources": dict(model.weight_sources), "spec": {}}
    return model, info


def test_interrupted_encode_resumes_without_loss(tmp_path, small_model, monkeypatch):
    from test_video import make_audio_only, make_clip

    model, info = small_model
    vids = tmp_path / "videos"
    vids.mkdir()
    paths = []
    for i in range(5):
        p = vids / f"clip{i}.mp4"
        make_clip(p, 1 + i, 25, seed=i)
        paths.append(p)
    bad = vids / "bad.mp4"
    bad.write_bytes(b"junk" * 10)
    make_audio_only(vids / "audio.mp4")
    paths[2:2] = [bad, vids / "audio.mp4"]  # bad files in the middle of the list

    real = model.encode_video
    calls = {"n": 0}

    def interrupted(frames, mask):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("Ctrl-C during the second batch")
        return real(frames, mask)

    gdir = tmp_path / "gallery"
    monkeypatch.setattr(model, "encode_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encode_into_gallery(model, info, paths, gdir, batch_size=2, workers=2, progress=False)
    monkeypatch.setattr(model, "encode_video", real)
    Gallery.create_or_open(gdir, info, model.config.embed_dim).close()  # released on the way out
    g = Gallery.open(gdir)
    assert [e["path"] for e in g.entries()] == [str(p) for p in paths[:2]]  # the first batch survived

    res = encode_into_gallery(model, info, paths, gdir, batch_size=2, workers=2, progress=False)
    assert len(res["skipped"]) == 2 and len(res["encoded"]) == 3
    assert set(res["failed"]) == {str(bad), str(vids / "audio.mp4")}
    assert "bad.mp4" in res["failed"][str(bad)]
    g = Gallery.open(gdir)
    assert sorted(e["path"] for e in g.entries()) == sorted(str(p) for p in paths if p.name.startswith("clip"))
    assert str(bad.resolve()) in g.manifest["failed"]

    # nothing lost or changed: the same embeddings as one uninterrupted run
    fresh = encode_into_gallery(model, info, paths, tmp_path / "fresh", batch_size=8, workers=0,
                                progress=False)
    assert len(fresh["encoded"]) == 5
    by_path = {e["path"]: i for i, e in enumerate(Gallery.open(tmp_path / "fresh").entries())}
    ref = Gallery.open(tmp_path / "fresh").embeddings()
    got = g.embeddings()
    for i, e in enumerate(g.entries()):
        np.testing.assert_allclose(got[i], ref[by_path[e["path"]]], atol=1e-5)

    # a third run does nothing; a changed file is re-encoded and supersedes its old row
    res = encode_into_gallery(model, info, paths, gdir, batch_size=2, workers=0, progress=False)
    assert res["encoded"] == [] and len(res["skipped"]) == 5
    make_clip(paths[0], 2, 25, seed=9)
    res = encode_into_gallery(model, info, paths, gdir, batch_size=2, workers=0, progress=False)
    assert res["encoded"] == [str(paths[0].resolve())]
    g = Gallery.open(gdir)
    assert len(g) == 5 and g.live_mask().all()  # compacted: the old row is gone
    meta = json.loads((gdir / "gallery.json").read_text())
    assert meta["model"]["fingerprint"] == info["fingerprint"]
