"""The gallery store never loses or touches what a user gave it, never answers from damaged data, and
keeps exactly one writer at a time."""
from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest

from muse_tvr.cli import main
from muse_tvr.engine.gallery import Gallery, GalleryError, atomic_write_bytes
from muse_tvr.engine.retrieval import topk_search

FP = {"fingerprint": "a" * 64, "name": "test"}


def _rows(n, dim=8, seed=0):
    e = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _entries(names):
    return [{"key": k, "path": k} for k in names]


def test_user_files_in_out_are_never_deleted(tmp_path):
    """An --out folder holding the user's files (named like shards or temporaries) is refused, and files
    that appear later inside a gallery are left alone by writers."""
    user = tmp_path / "o"
    user.mkdir()
    (user / "a.mp4").write_bytes(b"video a")
    (user / "shard-2024-holiday.mp4").write_bytes(b"video b")
    (user / "shard-000001").mkdir()
    with pytest.raises(GalleryError, match="not empty and is not a gallery"):
        Gallery.create_or_open(user, FP, 8)
    assert sorted(p.name for p in user.iterdir()) == ["a.mp4", "shard-000001", "shard-2024-holiday.mp4"]
    assert (user / "shard-2024-holiday.mp4").read_bytes() == b"video b"

    g_dir = tmp_path / "g"
    with Gallery.create_or_open(g_dir, FP, 8) as g:
        g.add(_rows(2), _entries("ab"))
    keep = {"shard-000099.safetensors": b"mine", ".notes.tmp-1": b"mine too", "shard-holiday.mp4": b"x"}
    for name, data in keep.items():
        (g_dir / name).write_bytes(data)
    (g_dir / "shard-dir").mkdir()
    with Gallery.create_or_open(g_dir, FP, 8) as g:
        g.add(_rows(2, seed=1), _entries("cd"))
        g.compact()
    for name, data in keep.items():
        assert (g_dir / name).read_bytes() == data
    assert (g_dir / "shard-dir").is_dir()
    assert len(Gallery.open(g_dir)) == 4


def test_encode_refuses_out_with_user_files(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "shard-2024-holiday.mp4").write_bytes(b"keep me")
    rc = main(["encode", str(out), "--out", str(out), "--backbone", "tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and "not empty and is not a gallery" in err and "Traceback" not in err
    assert (out / "shard-2024-holiday.mp4").read_bytes() == b"keep me"
    assert not (out / "gallery.json").exists()


def _writer(root, start, n, q):
    try:
        with Gallery.create_or_open(root, FP, 8) as g:
            for i in range(n):
                g.add(_rows(1, seed=start + i), _entries([f"k{start + i}"]))
        q.put("ok")
    except GalleryError as e:
        q.put(f"refused: {e}")


def test_two_concurrent_writers_never_both_write(tmp_path):
    """Many rounds of two processes racing for a new gallery: exactly the rows of the writers that reported
    success are present, and a refused writer got a clear error."""
    ctx = mp.get_context("fork")
    for trial in range(25):
        root = tmp_path / f"g{trial}"
        q = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(root, 100 * w, 6, q)) for w in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        results = sorted(q.get(timeout=5) for _ in procs)
        ok = [r for r in results if r == "ok"]
        assert ok, results
        assert all(r == "ok" or "is writing this gallery" in r for r in results), results
        assert len(Gallery.open(root)) == 6 * len(ok)


def test_corrupt_shard_is_detected_and_named(tmp_path):
    emb = _rows(5)
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        g.add(emb, _entries("abcde"))
    shard = tmp_path / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4 * 8 + 1] ^= 0x40  # flip a bit in the last row's first value: a big but finite number
    shard.write_bytes(bytes(data))
    g = Gallery.open(tmp_path)
    with pytest.raises(GalleryError, match="shard-000001.safetensors: checksum mismatch"):
        topk_search(emb[:1], g.iter_chunks(), 3)
    meta = tmp_path / "shard-000001.json"
    shard.write_bytes(bytes(data[:-4 * 8 + 1]) + bytes([data[-4 * 8 + 1] ^ 0x40]) + bytes(data[-4 * 8 + 2:]))
    assert np.array_equal(Gallery.open(tmp_path).embeddings(), emb)  # restored: reads again
    meta.write_text(meta.read_text().replace('"e"', '"x"'))
    with pytest.raises(GalleryError, match="shard-000001.json: damaged shard metadata"):
        Gallery.open(tmp_path).entries()


def test_search_cli_reports_a_damaged_shard(tmp_path, capsys):
    from muse_tvr.commands import build_model

    model, info = build_model({"backbone": "tiny", "seed": 0})
    dim = model.config.embed_dim
    with Gallery.create_or_open(tmp_path, info, dim) as g:
        g.add(_rows(3, dim), _entries("abc"))
    shard = tmp_path / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x7F
    shard.write_bytes(bytes(data))
    rc = main(["search", "a red circle", "--gallery", str(tmp_path), "--backbone", "tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and "checksum mismatch" in err and "Traceback" not in err


def test_non_finite_or_non_unit_rows_are_refused(tmp_path):
    emb = _rows(3)
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        bad = emb.copy()
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match=r"row 1 \(key 'b'\) has non-finite"):
            g.add(bad, _entries("abc"))
        with pytest.raises(ValueError, match=r"row 0 \(key 'a'\) has norm 3"):
            g.add(emb * 3, _entries("abc"))
        g.add(emb, _entries("abc"))
    assert len(Gallery.open(tmp_path)) == 3


def test_temp_files_do_not_follow_symlinks(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    import secrets
    monkeypatch.setattr(secrets, "token_hex", lambda n: "00" * n)
    (tmp_path / ".out.json.tmp-4242-000000000000").symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"new")
    assert victim.read_text() == "precious" and not target.exists()


@pytest.mark.parametrize("manifest", [[], {"format": "muse-tvr-gallery/2", "shards": "x"}, "text"])
def test_malformed_manifest_is_an_error(tmp_path, manifest):
    (tmp_path / "gallery.json").write_text(json.dumps(manifest))
    with pytest.raises(GalleryError, match="gallery.json"):
        Gallery.open(tmp_path)


def test_short_shard_json_is_an_error(tmp_path):
    with Gallery.create_or_open(tmp_path, FP, 8) as g:
        g.add(_rows(3), _entries("abc"))
    (tmp_path / "shard-000001.json").write_text('{"entries": [')
    with pytest.raises(GalleryError, match="shard-000001.json"):
        Gallery.open(tmp_path).entries()


def test_symlink_loop_in_input_is_skipped(tmp_path):
    from muse_tvr.engine.video import find_videos

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "loop1.mp4").symlink_to(tmp_path / "loop2.mp4")
    (tmp_path / "loop2.mp4").symlink_to(tmp_path / "loop1.mp4")
    with pytest.warns(UserWarning, match="loop1.mp4: skipped"):
        videos, _ = find_videos([tmp_path])
    assert [v.name for v in videos] == ["a.mp4"]


@pytest.mark.parametrize("flag", [["--threads", "-1"], ["--batch-size", "0"], ["--workers", "-2"]])
def test_bad_counts_are_usage_errors(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["encode", str(tmp_path), "--out", str(tmp_path / "g"), "--backbone", "tiny", *flag])
    assert e.value.code == 2 and "invalid count" in capsys.readouterr().err


def test_unwritable_out_is_one_line(tmp_path, capsys):
    vids = tmp_path / "v"
    vids.mkdir()
    (vids / "a.mp4").write_bytes(b"x")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc = main(["encode", str(vids), "--out", str(blocker / "g"), "--backbone", "tiny"])
    err = capsys.readouterr().err
    assert rc in (1, 2) and "Traceback" not in err and str(blocker) in err
