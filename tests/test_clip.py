"""The CLIP towers against open_clip's ViT-B-32 (QuickGELU) with the same random weights."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from muse_tvr.engine.clip import Clip, ClipVisual, LayerNormFp32  # noqa: E402
from muse_tvr.engine.config import TINY, VIT_B_32  # noqa: E402

SOT, EOT = 49406, 49407


def close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    """Max-abs check with a tolerance relative to the size of the reference values."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel:g} * {scale:.3g}"


@pytest.fixture(scope="module")
def oracle():
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    # Random init leaves some tensors at constants; perturb them so a mixed-up weight cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight",
                              "ln_final.weight")):
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def ours(oracle):
    model = Clip(VIT_B_32.vision, VIT_B_32.text).eval()
    model.load_state_dict(oracle.state_dict(), strict=True)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def make_ids(length: int, lengths: list[int], seed: int = 2) -> torch.Tensor:
    """Rows `[SOT] random tokens [EOT] 0...` with `n` tokens each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), length, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0] = SOT
        ids[i, 1:n + 1] = torch.randint(0, SOT, (n,), generator=g)
        ids[i, n + 1] = EOT
    return ids


@pytest.fixture(scope="module")
def image_ref(oracle, images):
    with torch.no_grad():
        oracle.visual.output_tokens = True
        try:
            pooled, tokens = oracle.visual(images)
        finally:
            oracle.visual.output_tokens = False
        # open_clip 3.3 projects only the pooled CLS; its tokens are ln_post outputs without proj.
        return torch.cat([pooled[:, None], tokens @ oracle.visual.proj], dim=1)


def test_state_dict_is_openai_layout(oracle, ours):
    got = ours.state_dict()
    want = oracle.state_dict()
    assert set(got) == set(want)
    assert all(got[k].shape == want[k].shape for k in got)
    for key in ["visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj",
                "visual.transformer.resblocks.11.attn.in_proj_weight", "visual.ln_post.bias",
                "token_embedding.weight", "positional_embedding", "transformer.resblocks.0.attn.in_proj_bias",
                "transformer.resblocks.0.attn.out_proj.weight", "transformer.resblocks.0.mlp.c_fc.weight",
                "transformer.resblocks.0.mlp.c_proj.bias", "transformer.resblocks.0.ln_2.weight",
                "ln_final.weight", "text_projection", "logit_scale"]:
        assert key in got, key
    assert "visual.conv1.bias" not in got
    assert got["visual.conv1.weight"].shape == (768, 3, 32, 32)
    assert got["positional_embedding"].shape == (77, 512)


def test_tower_key_subsets():
    clip = Clip(TINY.vision, TINY.text)
    visual = ClipVisual(TINY.vision).state_dict()
    keys = set(clip.state_dict())
    assert {f"visual.{k}" for k in visual} == {k for k in keys if k.startswith("visual.")}
    assert {k.split(".")[0] for k in keys} == {"visual", "token_embedding", "positional_embedding", "transformer",
                                               "ln_final", "text_projection", "logit_scale"}
    assert math.isclose(clip.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)


def test_encode_image_matches_open_clip(ours, images, image_ref):
    with torch.no_grad():
        got = ours.encode_image(images)
    assert got.dtype == torch.float32 and got.shape == (2, 50, 512)
    close(got, image_ref, 1e-5)


def test_encode_text_77_matches_open_clip(oracle, ours):
    ids = make_ids(77, [5, 30])
    with torch.no_grad():
        got = ours.encode_text(ids)
        want = oracle.encode_text(ids)
    assert got.dtype == torch.float32 and got.shape == (2, 512)
    close(got, want, 1e-5)


def test_encode_text_32_matches_open_clip(oracle, ours):
    ids = make_ids(32, [5, 30], seed=3)
    with torch.no_grad():
        got = ours.encode_text(ids)
        # open_clip always runs all 77 positions. Two oracles for a 32-position run: (a) zero padding
        # to 77, which a causal model cannot see from the EOT position; (b) open_clip with its positional
        # table and mask cut to 32 rows.
        padded = oracle.encode_text(F.pad(ids, (0, 77 - 32)))
        pos, mask = oracle.positional_embedding, oracle.attn_mask
        try:
            oracle.positional_embedding = torch.nn.Parameter(pos[:32].clone())
            oracle.attn_mask = mask[:32, :32]
            cut = oracle.encode_text(ids)
        finally:
            oracle.positional_embedding, oracle.attn_mask = pos, mask
    close(got, padded, 1e-5)
    close(got, cut, 1e-5)


def test_first_eot_is_pooled(ours):
    # argmax returns the first maximum, so a stray EOT later in the row must not move the pooling position.
    ids = make_ids(32, [6])
    twice = ids.clone()
    twice[0, 20] = EOT
    with torch.no_grad():
        close(ours.encode_text(twice), ours.encode_text(ids), 1e-6)


def test_half_close_to_fp32(oracle, images, image_ref):
    model = Clip(VIT_B_32.vision, VIT_B_32.text)
    model.load_state_dict(oracle.state_dict())
    model.half().eval()
    ids = make_ids(32, [7])
    with torch.no_grad():
        img = model.encode_image(images[:1])
        txt = model.encode_text(ids)
        want_txt = oracle.encode_text(F.pad(ids, (0, 77 - 32)))
    assert img.dtype == torch.float32 and txt.dtype == torch.float32
    close(img, image_ref[:1], 5e-3)
    close(txt, want_txt, 5e-3)
    assert F.cosine_similarity(img, image_ref[:1], dim=-1).min() > 0.9999


def test_reference_precision(oracle, images, image_ref):
    model = Clip(VIT_B_32.vision, VIT_B_32.text)
    model.load_state_dict(oracle.state_dict())
    model.to_reference_precision().eval()
    sd = model.state_dict()
    for key in ["visual.conv1.weight", "visual.proj", "text_projection",
                "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_fc.bias"]:
        assert sd[key].dtype == torch.float16, key
    for key in ["visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
                "token_embedding.weight", "positional_embedding", "ln_final.bias", "logit_scale"]:
        assert sd[key].dtype == torch.float32, key
    with torch.no_grad():
        img = model.encode_image(images[:1])
    assert img.dtype == torch.float32
    close(img, image_ref[:1], 5e-3)


def test_layernorm_fp32_keeps_dtype():
    ln = LayerNormFp32(64)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = 100 * torch.randn(3, 64)
    y = ln.half()(x.half())
    assert y.dtype == torch.float16
    want = F.layer_norm(x.half().float(), (64,), ln.weight.float(), ln.bias.float())
    close(y.float(), want, 2e-3)


def test_random_init_is_sane():
    torch.manual_seed(0)
    model = Clip(TINY.vision, TINY.text).eval()
    with torch.no_grad():
        img = model.encode_image(torch.randn(2, 3, 224, 224))
        txt = model.encode_text(make_ids(TINY.max_words, [4, 9]))
    assert img.shape == (2, TINY.vision.tokens, 64) and txt.shape == (2, 64)
    for out in (img, txt):
        assert torch.isfinite(out).all()
        assert 0.1 < out.std().item() < 10


@pytest.mark.parametrize("images, match", [
    (torch.randn(1, 3, 160, 160), "must be 224x224"),
    (torch.randn(1, 3, 224, 200), "must be 224x224"),
    (torch.randn(1, 1, 224, 224), "3 \\(RGB\\) channels"),
    (torch.randn(3, 224, 224), "4-D"),
    (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "floating-point"),
    (torch.zeros(1, 3, 224, 224, dtype=torch.int64), "floating-point"),
    (torch.randn(1, 3, 224, 224).numpy(), "torch.Tensor"),
])
def test_bad_images_raise(images, match):
    model = ClipVisual(TINY.vision)
    with pytest.raises(ValueError, match=match):
        model(images)


@pytest.mark.parametrize("ids, match", [
    (torch.full((1, 8), 49408), "token id 49408 is outside the vocabulary"),
    (torch.full((1, 8), -1), "token id -1 is outside the vocabulary"),
    (torch.zeros(1, 78, dtype=torch.long), "length 78"),
    (torch.zeros(1, 0, dtype=torch.long), "length 0"),
    (torch.zeros(8, dtype=torch.long), "2-D"),
    (torch.zeros(1, 8), "integer"),
    (torch.zeros(1, 8, dtype=torch.bool), "integer"),
    ([[SOT, EOT]], "torch.Tensor"),
])
def test_bad_ids_raise(ids, match):
    model = Clip(TINY.vision, TINY.text)
    with pytest.raises(ValueError, match=match):
        model.encode_text(ids)


def test_int32_ids_accepted():
    model = Clip(TINY.vision, TINY.text).eval()
    ids = make_ids(16, [3])
    with torch.no_grad():
        close(model.encode_text(ids.int()), model.encode_text(ids), 1e-6)


def test_mismatched_joint_dims_raise():
    with pytest.raises(ValueError, match="output_dim"):
        Clip(TINY.vision, VIT_B_32.text)
