"""evaluate: caption ids stay inside --videos; BOM and non-UTF-8 caption files; the --cache message."""
from __future__ import annotations

import pytest

from muse_tvr import cli
from muse_tvr.commands.evaluate import find_video_file, unsafe_video_id
from muse_tvr.engine.retrieval import read_caption_csv


def _run(capsys, argv):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err.strip().splitlines()[-1] if err.strip() else ""


@pytest.mark.parametrize("vid", ["../secret", "a/../../secret", "/etc/passwd", "..\\\\secret"])
def test_ids_outside_the_folder_are_refused(capsys, tmp_path, vid):
    videos = tmp_path / "videos"
    videos.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    captions = tmp_path / "c.csv"
    captions.write_text(f"video_id,sentence\nok,a cat\n{vid},a dog\n")
    rc, line = _run(capsys, ["evaluate", "--videos", str(videos), "--captions", str(captions),
                             "--backbone", "tiny"])
    assert rc == 2
    assert f"{captions}:3" in line and "inside --videos" in line
    with pytest.raises(ValueError):
        find_video_file(videos, vid)


def test_plain_ids_are_fine():
    assert unsafe_video_id("video7010") is None
    assert unsafe_video_id("sub/video1") is None


def test_bom_csv_is_read(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes("\ufeffvideo_id,sentence\nv1,a cat\n".encode("utf-8"))
    assert read_caption_csv(p) == [("v1", "a cat")]


def test_latin1_csv_names_the_file(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("video_id,sentence\nv1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv.*UTF-8"):
        read_caption_csv(p)


def test_cache_of_another_model_names_cache(capsys, tmp_path):
    import json

    videos = tmp_path / "videos"
    videos.mkdir()
    captions = tmp_path / "c.csv"
    captions.write_text("video_id,sentence\nv1,a cat\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "gallery.json").write_text(json.dumps({"model": {"fingerprint": "0" * 64}}))
    rc, line = _run(capsys, ["evaluate", "--videos", str(videos), "--captions", str(captions),
                             "--backbone", "tiny", "--cache", str(cache)])
    assert rc == 2
    assert f"--cache {cache}" in line and "--out" not in line
