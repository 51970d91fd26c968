"""The pyramid sidecar: replay of the reference constructor's generator draws, file format, CLI."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from muse_tvr import cli
from muse_tvr.engine.config import get_config
from muse_tvr.engine.pyramid import FeaturePyramid
from muse_tvr.engine.sidecar import (FORMAT_TAG, load_sidecar, make_pyramid_sidecar, replay_reference_generator,
                                     save_sidecar, sidecar_checksum)


def read_sidecar_metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()

# Checksums of the seed-42 sidecars. Each was compared tensor-for-tensor with the pyramid built by the
# reference code's own CLIP4Clip constructor (stubbed CLIP file and mamba_ssm, `.cuda()` a no-op) on
# torch 2.14.1 and 2.13.0. A change here means torch's initialisers or CPU random kernels changed.
B32_SEED42_SHA256 = "cbcc51c57470148029b6c06aaffaabe5482036bcc0c5a81137e55b46798bd4a6"
B16_SEED42_SHA256 = "9936584f93fdbe9f824ff058b20dbbfe4e134e47a4e927beecdd9973405cb004"


def _explicit_reference_construction(seed: int) -> None:
    """A second, independent statement of what the reference builds before its pyramid (ViT-B/32).

    Written module by module as module_clip.py's CLIP constructor does it, keeping the real text
    parameters so that `initialize_parameters` re-draws into the very tensors the reference uses.
    """
    def block(width: int) -> nn.ModuleDict:
        # ResidualAttentionBlock: attn, ln_1, mlp.c_fc, mlp.c_proj, ln_2, in that order.
        return nn.ModuleDict({
            "attn": nn.MultiheadAttention(width, width // 64),
            "ln_1": nn.LayerNorm(width),
            "c_fc": nn.Linear(width, 4 * width),
            "c_proj": nn.Linear(4 * width, width),
            "ln_2": nn.LayerNorm(width),
        })

    torch.manual_seed(seed)
    # VisualTransformer
    nn.Conv2d(3, 768, kernel_size=32, stride=32, bias=False)
    768 ** -0.5 * torch.randn(768)
    768 ** -0.5 * torch.randn(7 * 7 + 1, 768)
    nn.LayerNorm(768)
    for _ in range(12):
        block(768)
    nn.LayerNorm(768)
    768 ** -0.5 * torch.randn(768, 512)
    # text side of CLIP.__init__
    text_blocks = [block(512) for _ in range(12)]
    token_embedding = nn.Embedding(49408, 512)
    positional_embedding = nn.Parameter(torch.empty(77, 512))
    nn.LayerNorm(512)
    text_projection = nn.Parameter(torch.empty(512, 512))
    nn.Parameter(torch.ones([]))
    # CLIP.initialize_parameters
    with torch.no_grad():
        nn.init.normal_(token_embedding.weight, std=0.02)
        nn.init.normal_(positional_embedding, std=0.01)
        proj_std = 512 ** -0.5 * (2 * 12) ** -0.5
        for b in text_blocks:
            nn.init.normal_(b["attn"].in_proj_weight, std=512 ** -0.5)
            nn.init.normal_(b["attn"].out_proj.weight, std=proj_std)
            nn.init.normal_(b["c_fc"].weight, std=(2 * 512) ** -0.5)
            nn.init.normal_(b["c_proj"].weight, std=proj_std)
        nn.init.normal_(text_projection, std=512 ** -0.5)
    # --loose_type, sim_header MUSE: nothing else draws before the pyramid.


@pytest.fixture(scope="module")
def b32():
    cfg = get_config("ViT-B/32")
    saved = torch.get_rng_state()
    try:
        steps = replay_reference_generator(cfg, seed=42)
        after_replay = torch.get_rng_state()
        pyramid = FeaturePyramid(cfg.head, cfg.vision)
        replay_then_pyramid = {k: v.detach().clone() for k, v in pyramid.state_dict().items()}
        _explicit_reference_construction(42)
        after_explicit = torch.get_rng_state()
    finally:
        torch.set_rng_state(saved)
    sidecar = make_pyramid_sidecar(cfg, seed=42)
    return dict(cfg=cfg, steps=steps, after_replay=after_replay, after_explicit=after_explicit,
                replay_then_pyramid=replay_then_pyramid, sidecar=sidecar)


def test_replay_leaves_generator_as_explicit_construction(b32):
    assert bytes(b32["after_replay"].numpy()) == bytes(b32["after_explicit"].numpy())
    # And the replay did draw: the state is not the freshly seeded one.
    torch_state = torch.get_rng_state()
    torch.manual_seed(42)
    assert bytes(torch.get_rng_state().numpy()) != bytes(b32["after_replay"].numpy())
    torch.set_rng_state(torch_state)


def test_replay_steps_follow_reference_order(b32):
    steps = b32["steps"]
    # conv1, class emb, pos emb, 12 x 3 visual, proj, 12 x 3 text, embedding, 2 + 12 x 4 + 1 re-inits
    assert len(steps) == 3 + 36 + 1 + 36 + 1 + 2 + 48 + 1
    assert "Conv2d(3, 768, 32" in steps[0].what
    assert "proj" in steps[39].what and "text block 0" in steps[40].where
    assert "Embedding(49408, 512)" in steps[76].what
    assert all("initialize_parameters" in s.where for s in steps[77:])


def test_sidecar_keys_shapes_and_size(b32):
    sd = b32["sidecar"]
    expected = {}
    for i, idx in ((0, (1, 2, 4, 5)), (1, (0, 1, 3, 4)), (2, (0, 1, 2, 4, 5))):
        for j in idx:
            expected[f"mamba_stages.{i}.{j}.weight"] = None
            expected[f"mamba_stages.{i}.{j}.bias"] = None
    assert set(sd) == set(expected)
    assert sd["mamba_stages.0.1.weight"].shape == (512, 512, 1, 1)
    assert sd["mamba_stages.0.4.weight"].shape == (512, 512, 3, 3)
    assert sd["mamba_stages.1.0.weight"].shape == (512, 512, 1, 1)
    assert sd["mamba_stages.2.0.weight"].shape == (512, 256, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    assert sd["mamba_stages.2.0.bias"].shape == (256,)
    assert sd["mamba_stages.2.1.weight"].shape == (512, 256, 1, 1)
    assert sd["mamba_stages.2.2.weight"].shape == (512,)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in sd.values())
    assert sum(math.prod(t.shape) for t in sd.values()) == 8_267_008
    # LayerNorms keep their constant defaults; convolutions are kaiming-uniform within 1/sqrt(fan_in).
    assert torch.equal(sd["mamba_stages.1.1.weight"], torch.ones(512))
    assert torch.equal(sd["mamba_stages.1.1.bias"], torch.zeros(512))
    assert sd["mamba_stages.1.3.weight"].abs().max() <= (512 * 9) ** -0.5


def test_sidecar_matches_replay_then_pyramid_and_pinned_checksum(b32):
    sd, manual = b32["sidecar"], b32["replay_then_pyramid"]
    assert sd.keys() == manual.keys()
    assert all(torch.equal(sd[k], manual[k]) for k in sd)
    assert sidecar_checksum(sd) == B32_SEED42_SHA256


def test_vit_b16_checksum():
    assert sidecar_checksum(make_pyramid_sidecar(get_config("ViT-B/16"), seed=42)) == B16_SEED42_SHA256


def test_seed_matters_and_caller_state_is_kept():
    tiny = get_config("tiny")
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = make_pyramid_sidecar(tiny, seed=42)
    assert torch.equal(torch.get_rng_state(), before)
    b = make_pyramid_sidecar(tiny, seed=42)
    c = make_pyramid_sidecar(tiny, seed=43)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mamba_stages.1.0.weight"], c["mamba_stages.1.0.weight"])


def test_independent_of_caller_default_dtype_and_device():
    tiny = get_config("tiny")
    ref = make_pyramid_sidecar(tiny, seed=42)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.set_default_device("meta")
    try:
        other = make_pyramid_sidecar(tiny, seed=42)
        assert torch.get_default_dtype() == torch.float64  # restored to the caller's choice
    finally:
        torch.set_default_device(None)
        torch.set_default_dtype(dtype)
    assert all(other[k].device.type == "cpu" and torch.equal(ref[k], other[k]) for k in ref)


def test_unsupported_config_is_refused():
    cfg = get_config("ViT-B/32")
    with pytest.raises(ValueError, match="scales"):
        make_pyramid_sidecar(cfg.replace(head=cfg.head.__class__(scales=(1.0, 2.0))), seed=42)


def test_save_load_round_trip(b32, tmp_path):
    path = tmp_path / "pyramid.safetensors"
    checksum = save_sidecar(b32["sidecar"], path, meta={"seed": 42, "backbone": "ViT-B/32"})
    assert checksum == B32_SEED42_SHA256
    meta = read_sidecar_metadata(path)
    assert meta["format"] == FORMAT_TAG and meta["seed"] == "42" and meta["backbone"] == "ViT-B/32"
    assert meta["sha256"] == checksum and meta["torch_version"] == torch.__version__
    loaded = load_sidecar(path)  # config taken from the metadata
    assert loaded.keys() == b32["sidecar"].keys()
    assert all(torch.equal(loaded[k], b32["sidecar"][k]) for k in loaded)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    # Shapes are equal for ViT-B/16, values are not: a backbone mismatch is refused.
    with pytest.raises(ValueError, match="ViT-B/16"):
        load_sidecar(path, get_config("ViT-B/16"))


def test_missing_corrupt_and_truncated_files(b32, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_sidecar(tmp_path / "absent.safetensors", b32["cfg"])
    good = tmp_path / "good.safetensors"
    save_sidecar(b32["sidecar"], good, meta={"backbone": "ViT-B/32"})
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "garbage": b"not a safetensors file at all", "empty": b""}
    for name, content in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        with pytest.raises(ValueError, match="corrupt or truncated"):
            load_sidecar(p, b32["cfg"])
    flipped = bytearray(data)
    flipped[-3] ^= 0x40  # inside the last tensor's data: the header still parses
    p = tmp_path / "flipped.safetensors"
    p.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        load_sidecar(p)


def test_wrong_keys_shapes_and_dtypes_are_listed(b32, tmp_path):
    state = dict(b32["sidecar"])
    state["mamba_stages.0.1.weight"] = torch.zeros(512, 512, 3, 3)
    del state["mamba_stages.2.5.bias"]
    state["mamba_stages.3.0.weight"] = torch.zeros(1)
    state["mamba_stages.1.1.bias"] = state["mamba_stages.1.1.bias"].half()
    p = tmp_path / "bad.safetensors"
    save_sidecar(state, p)
    with pytest.raises(ValueError) as e:
        load_sidecar(p, b32["cfg"])
    msg = str(e.value)
    assert "missing keys: mamba_stages.2.5.bias" in msg
    assert "unexpected keys: mamba_stages.3.0.weight" in msg
    assert "mamba_stages.0.1.weight: (512, 512, 3, 3) (expected (512, 512, 1, 1))" in msg
    assert "not float32: mamba_stages.1.1.bias" in msg
    # Without backbone metadata the caller must say what to check against.
    with pytest.raises(ValueError, match="names no backbone"):
        load_sidecar(p)


def test_cli_writes_sidecar(b32, tmp_path, capsys):
    out = tmp_path / "pyramid.safetensors"
    assert cli.main(["pyramid-sidecar", "--seed", "42", "--backbone", "ViT-B/32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"sha256 {B32_SEED42_SHA256}" in printed
    assert "26 tensors" in printed and "8,267,008 parameters" in printed and "caveats:" in printed
    loaded = load_sidecar(out)
    assert all(torch.equal(loaded[k], b32["sidecar"][k]) for k in loaded)
    assert read_sidecar_metadata(out)["seed"] == "42"


def test_cli_reports_bad_output_directory(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "p.safetensors"
    assert cli.main(["pyramid-sidecar", "--out", str(out)]) == 2
    assert "output directory does not exist" in capsys.readouterr().err
    assert not out.exists()
