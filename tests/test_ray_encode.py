"""Encoding past one process: Ray Data (a local 2-CPU cluster, 2 model workers) and `--shard i/N` +
`gallery merge` give the single-process encode's embeddings; a worker killed mid-run and an interrupted
run leave nothing duplicated or lost."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from muse_tvr.cli import main  # noqa: E402
from muse_tvr.commands import build_model, encode_into_gallery  # noqa: E402
from muse_tvr.engine.distributed import ray_encode, select_shard, shard_of  # noqa: E402
from muse_tvr.engine.gallery import Gallery  # noqa: E402

SPEC = {"backbone": "tiny", "seed": 0}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from test_video import make_clip

    d = tmp_path_factory.mktemp("videos")
    paths = []
    for i in range(6):
        p = d / f"clip{i}.mp4"
        make_clip(p, 1 + i % 3, 25, seed=i)
        paths.append(p)
    (d / "bad.mp4").write_bytes(b"junk" * 10)
    return d, paths + [d / "bad.mp4"]


@pytest.fixture(scope="module")
def single(clips, tmp_path_factory):
    """The single-process encode: key -> embedding."""
    model, info = build_model(SPEC)
    out = tmp_path_factory.mktemp("single") / "g"
    encode_into_gallery(model, info, clips[1], out, batch_size=3, progress=False)
    return by_key(out)


def by_key(gdir) -> dict:
    g = Gallery.open(gdir)
    entries = g.entries()
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return dict(zip(keys, g.embeddings()))


def assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert diff < 1e-5, f"max abs diff {diff:.3g}"


def test_ray_two_workers_equal_single_process_even_when_a_worker_is_killed(cluster, clips, single, tmp_path,
                                                                           monkeypatch):
    """Two model workers on a local cluster give the single-process embeddings. One worker dies
    (os._exit) right after saving a shard, before Ray hears that its batch is done: Ray restarts it and
    encodes the batch again (the merge drops the rows saved twice), or the run fails and the rerun
    finishes it. Either way the gallery ends with every video exactly once. (One Ray run covers both:
    starting workers is most of the cost on a 2-core box.)"""
    marker = tmp_path / "killed"
    monkeypatch.setenv("MUSE_TVR_TEST_KILL_AFTER_SHARD", str(marker))
    out = tmp_path / "g"
    bad = str(clips[0] / "bad.mp4")
    try:
        first = ray_encode(SPEC, clips[1], out, workers=2, batch_size=1, progress=False)
    except Exception:  # Ray gave up on the dead worker: the rerun below must finish the job
        first = None
    assert marker.exists(), "no worker was killed: the test did not test anything"
    monkeypatch.delenv("MUSE_TVR_TEST_KILL_AFTER_SHARD")
    # bad.mp4 is retried on every run: leave it out when the first run finished, so Ray need not start
    again = ray_encode(SPEC, clips[1] if first is None else clips[1][:6], out, workers=2, batch_size=1,
                       progress=False)
    assert_same(by_key(out), single)
    assert not (out / "parts").exists()  # merged and removed
    assert str((clips[0] / "bad.mp4").resolve()) in Gallery.open(out).manifest["failed"]
    if first is not None:
        assert len(first["encoded"]) == 6 and list(first["failed"]) == [bad]
        assert first["ray"]["parts_with_rows"] >= 2  # both workers encoded (the restarted one: a third)
        assert first["ray"]["duplicates"] >= 1  # the retried batch's rows came twice, one was dropped
        assert again["encoded"] == [] and len(again["skipped"]) == 6


def test_leftover_parts_are_merged_on_rerun(clips, single, tmp_path):
    """An interrupted run leaves part galleries (here: everything was saved, the driver died before
    merging); the next run merges them and has nothing left to encode (so Ray never starts)."""
    model, info = build_model(SPEC)
    out = tmp_path / "g"
    Gallery.create_or_open(out, info, model.config.embed_dim).close()
    encode_into_gallery(model, info, clips[1][:4], out / "parts" / "host-1-a", batch_size=2, progress=False)
    encode_into_gallery(model, info, clips[1][3:6], out / "parts" / "host-2-b", batch_size=2, progress=False)
    (out / "parts" / "user-notes.txt").write_text("not the engine's")
    res = ray_encode(SPEC, clips[1][:6], out, workers=2, batch_size=2, progress=False)  # bad.mp4 would retry
    assert res["encoded"] == [] and len(res["skipped"]) == 6  # clip3 was in both parts: kept once
    assert_same(by_key(out), single)
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["user-notes.txt"]


def test_shards_then_merge_equal_single_process(clips, single, tmp_path, capsys):
    paths = clips[1]
    parts = [set(map(str, select_shard(paths, i, 3))) for i in range(3)]
    assert set.union(*parts) == set(map(str, paths)) and sum(map(len, parts)) == len(paths)
    assert select_shard(paths[::-1], 1, 3) == select_shard(paths, 1, 3)[::-1]  # order-free split
    assert shard_of("/x/a.mp4", 7) == shard_of("/x/a.mp4", 7)
    outs = []
    for i in range(3):
        outs.append(str(tmp_path / f"part{i}"))
        rc = main(["encode", str(clips[0]), "--out", outs[-1], "--backbone", "tiny", "--shard", f"{i}/3"])
        assert rc == 0
    g = tmp_path / "g"
    assert main(["gallery", "merge", "--gallery", str(g), *outs]) == 0
    assert_same(by_key(g), single)
    assert str((clips[0] / "bad.mp4").resolve()) in Gallery.open(g).manifest["failed"]
    capsys.readouterr()
    assert main(["gallery", "merge", "--gallery", str(g), *outs]) == 0  # again: nothing new
    assert "added 0, already present 6" in capsys.readouterr().out
    assert_same(by_key(g), single)
    assert all((tmp_path / f"part{i}" / "gallery.json").is_file() for i in range(3))  # parts kept
    shutil.rmtree(tmp_path / "part0")
    assert main(["encode", str(clips[0]), "--out", str(tmp_path / "x"), "--shard", "3/3"]) == 2
    assert "0 <= i < N" in capsys.readouterr().err
