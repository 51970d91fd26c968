"""Model-level behaviour: parameter counts, precision, input validation, the CLI entry points."""
import json

import pytest
import torch

from helpers import assert_close
from muse_tvr.cli import main
from muse_tvr.engine.config import TINY, get_config
from muse_tvr.engine.model import MuseModel


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MuseModel(TINY).eval()


def test_info_reports_spec_parameter_counts(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["mamba_head"] == 4_687_872
    assert info["parameters"]["pyramid"] == 8_267_008
    assert info["sequence_length"] == 3060
    assert info["weights"] == {"clip": "random", "pyramid": "random", "head": "random"}


def test_info_text_warns_about_random_weights(capsys):
    assert main(["info", "--backbone", "tiny"]) == 0
    assert "RANDOM" in capsys.readouterr().out


def test_demo_runs_and_ranks(capsys):
    assert main(["demo", "--backbone", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "text -> video ranking" in out and "Mamba head" in out


def test_unknown_backbone_is_a_clear_error(capsys):
    assert main(["info", "--backbone", "ViT-H/99"]) == 2
    assert "unknown model 'ViT-H/99'" in capsys.readouterr().err


def test_head_in_bf16_and_fp16_stays_close(tiny):
    tokens = torch.randn(1, TINY.max_frames, 50, 64)
    want = tiny.encode_tokens(tokens)
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
        m = MuseModel(TINY).eval()
        m.load_state_dict(tiny.state_dict())
        m.set_precision(clip_dtype=torch.float32, head_dtype=dtype)
        got = m.encode_tokens(tokens)
        assert got.dtype == torch.float32
        assert_close(got, want, tol, 0, f"head in {dtype}")


@pytest.mark.parametrize("frames,match", [
    (torch.zeros(2, 3, 224, 224), r"shape \(B, T, 3, 224, 224\)"),
    (torch.zeros(1, 2, 1, 224, 224), r"shape \(B, T, 3, 224, 224\)"),
    (torch.zeros(1, 2, 3, 112, 112), r"got \(1, 2, 3, 112, 112\)"),
    (torch.zeros(1, 2, 3, 224, 224, dtype=torch.uint8), "float tensor"),
    (torch.zeros(1, 0, 3, 224, 224), "at least one"),
])
def test_bad_frames(tiny, frames, match):
    with pytest.raises(ValueError, match=match):
        tiny.encode_video(frames)


def test_bad_masks(tiny):
    frames = torch.zeros(1, 2, 3, 224, 224)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\) = \(1, 2\)"):
        tiny.encode_video(frames, torch.ones(2))
    with pytest.raises(ValueError, match="only 0"):
        tiny.encode_video(frames, torch.tensor([[1.0, 0.5]]))


def test_bad_tokens_and_embeddings(tiny):
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, T, 50, 64\)"):
        tiny.encode_tokens(torch.zeros(1, 2, 49, 64))
    with pytest.raises(ValueError, match="equal C"):
        tiny.similarity(torch.zeros(2, 64), torch.zeros(3, 32))
    with pytest.raises(ValueError, match="unsupported dtype"):
        MuseModel(TINY).set_precision(head_dtype=torch.float64)


def test_empty_caption_is_rejected():
    from muse_tvr.engine.tokenizer import ClipTokenizer
    with pytest.raises(ValueError, match="empty"):
        ClipTokenizer()(["a dog", "   "])


def test_similarity_is_scaled_cosine(tiny):
    t = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(4, 64), dim=-1)
    s = tiny.similarity(t, v)
    assert_close(s, tiny.clip.logit_scale.exp() * t @ v.T, 1e-5, 1e-6, "similarity")


def test_presets_have_expected_sequence_lengths():
    assert get_config("ViT-B/16").sequence_length() == 12 * (1 + 49 + 196 + 784)
    assert get_config("ViT-L/14").vision.grid == 16


def test_cpu_chunked_backend_matches_reference(tiny):
    tokens = torch.randn(2, TINY.max_frames, 50, 64)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    want = tiny.encode_tokens(tokens, mask)
    try:
        got = tiny.set_backend("cpu-chunked").encode_tokens(tokens, mask)
    finally:
        tiny.set_backend("auto")
    assert_close(got, want, 2e-5, 1e-5, "cpu-chunked vs reference")
    with pytest.raises(ValueError, match="backend must be one of"):
        tiny.set_backend("cuda-magic")


def test_demo_on_cpu_chunked_backend(capsys):
    assert main(["demo", "--backbone", "tiny", "--backend", "cpu-chunked"]) == 0
    assert "head backend cpu-chunked" in capsys.readouterr().out


def test_ort_backend_matches_reference(tiny, tmp_path, monkeypatch):
    """ONNX Runtime + the C++ op library as the learner's CPU backend (built with `make -C cpp`); its export
    folder does not outlive the session's creation."""
    import tempfile

    from onnx_helpers import built_cpp
    built_cpp()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tokens = torch.randn(2, TINY.max_frames, 50, 64)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    want = tiny.encode_tokens(tokens, mask)
    try:
        got = tiny.set_backend("ort").encode_tokens(tokens, mask)
        again = tiny.encode_tokens(tokens[:1], mask[:1])  # reuses the export, other batch size
    finally:
        tiny.set_backend("auto")
    assert_close(got, want, 1e-5, 1e-5, "ort vs reference")
    assert_close(again, want[:1], 1e-5, 1e-5, "ort, batch 1")
    assert not list(tmp_path.glob("muse-tvr-ort-*"))
