"""CLI: bad input gives one line and exit 2; Ctrl-C gives one line and exit 130."""
from __future__ import annotations

import importlib.util

import pytest

from muse_tvr import cli


def _run(capsys, argv):
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    err = capsys.readouterr().err
    return rc, err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    return lines[-1]


def test_keyboard_interrupt_is_one_line_130(capsys, monkeypatch):
    import muse_tvr.commands.info as info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    rc, err = _run(capsys, ["info", "--backbone", "tiny"])
    assert rc == 130
    assert err.strip() == "muse-tvr info: interrupted"


def test_pyramid_sidecar_out_directory(capsys, tmp_path):
    rc, err = _run(capsys, ["pyramid-sidecar", "--out", str(tmp_path)])
    assert rc == 2
    assert "is a directory" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["pyramid-sidecar", "--out", "x.safetensors"],
                                     ["encode", "v.mp4", "--out", "g"],
                                     ["export", "onnx", "--out", "d"]])
def test_seed_out_of_range_is_a_usage_error(capsys, command):
    rc, err = _run(capsys, command + ["--seed", str(2 ** 70)])
    assert rc == 2
    assert "seed" in _one_line(err) and "out of range" in err


def test_export_out_existing_file(capsys, tmp_path):
    f = tmp_path / "existing.onnx"
    f.write_text("keep me")
    rc, err = _run(capsys, ["export", "onnx", "--backbone", "tiny", "--out", str(f)])
    assert rc == 2
    assert "is a file" in _one_line(err)
    assert f.read_text() == "keep me"


def test_export_without_extra_names_it(capsys, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    rc, err = _run(capsys, ["export", "onnx", "--backbone", "tiny", "--out", str(tmp_path / "d")])
    assert rc == 2
    assert "muse-tvr[export]" in _one_line(err)


def test_sidecar_without_reference_checkpoint_is_refused(capsys, tmp_path):
    rc, err = _run(capsys, ["info", "--backbone", "tiny", "--sidecar", str(tmp_path / "p.safetensors")])
    assert rc == 2
    assert "--sidecar" in _one_line(err)
    from muse_tvr.engine.config import get_config
    from muse_tvr.engine.weights import load_model, save_pretrained
    save_pretrained(load_model(None, None, get_config("tiny")), tmp_path / "m")
    rc, err = _run(capsys, ["info", "--model", str(tmp_path / "m"), "--sidecar", str(tmp_path / "p.safetensors")])
    assert rc == 2
    assert "does not apply" in _one_line(err)


def test_compare_refuses_an_export_of_another_model(tmp_path):
    import json

    from muse_tvr.commands.compare import check_fingerprints
    from muse_tvr.export.onnx_export import ExportedFile

    side = tmp_path / "text.float32.json"
    side.write_text(json.dumps({"part": "text", "model_fingerprint": "a" * 64}))
    f = ExportedFile("text", "plain", "float32", tmp_path / "text.float32.onnx", side)
    check_fingerprints([f], "a" * 64, tmp_path)
    with pytest.raises(ValueError, match="another model"):
        check_fingerprints([f], "b" * 64, tmp_path)
    side.write_text(json.dumps({"part": "text"}))
    with pytest.raises(ValueError, match="no model fingerprint"):
        check_fingerprints([f], "a" * 64, tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the [export] extra")
def test_export_then_compare_uses_the_same_seeded_model(capsys, tmp_path):
    out = str(tmp_path / "exp")
    assert cli.main(["export", "onnx", "--backbone", "tiny", "--parts", "text", "--out", out]) == 0
    assert cli.main(["compare", "--backbone", "tiny", "--parts", "text", "--dir", out]) == 0
    capsys.readouterr()
    rc, err = _run(capsys, ["compare", "--backbone", "tiny", "--seed", "3", "--parts", "text", "--dir", out])
    assert rc == 2 and "another model" in _one_line(err)


def test_engine_warnings_are_one_line(capsys, monkeypatch):
    import warnings

    import muse_tvr.commands.info as info
    from muse_tvr.engine.tokenizer import TextTruncatedWarning

    def warns(args):
        warnings.warn("query 'x' has 99 tokens; only the first 30 are used", TextTruncatedWarning)
        return 0

    monkeypatch.setattr(info, "run", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc, err = _run(capsys, ["info"])
    assert rc == 0
    assert err.strip() == "muse-tvr info: warning: query 'x' has 99 tokens; only the first 30 are used"
