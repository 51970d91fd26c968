"""Weight formats: reference checkpoint key names, sidecar, TorchScript archive, own format, bad files."""
import re
import warnings

import pytest
import torch
from torch import nn

from muse_tvr.engine.config import TINY, VIT_B_32
from muse_tvr.engine.model import MuseModel
from muse_tvr.engine.weights import (CheckpointError, infer_config, load_clip, load_model, load_pretrained,
                                     load_reference_checkpoint, model_to_reference_names, read_state_dict,
                                     save_pretrained)

# docs/model.md section 7, per block i: the official MUSE key names and shapes for ViT-B/32.
OFFICIAL_BLOCK = {
    "mamba.in_proj.weight": (1024, 512), "mamba.out_proj.weight": (512, 512),
    "mamba.conv1d.weight": (512, 1, 4), "mamba.conv1d.bias": (512,), "mamba.x_proj.weight": (64, 512),
    "mamba.dt_proj.weight": (512, 32), "mamba.dt_proj.bias": (512,), "mamba.A_log": (512, 16),
    "mamba.D": (512,), "mamba.conv1d_b.weight": (512, 1, 4), "mamba.conv1d_b.bias": (512,),
    "mamba.x_proj_b.weight": (64, 512), "mamba.dt_proj_b.weight": (512, 32), "mamba.dt_proj_b.bias": (512,),
    "mamba.A_b_log": (512, 16), "mamba.D_b": (512,), "layer_norm1.weight": (512,),
    "layer_norm1.bias": (512,), "temporal_fc.weight": (512, 512), "temporal_fc.bias": (512,),
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return MuseModel(TINY).eval()


def _inputs(cfg, b=2):
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(b, cfg.max_frames, 3, 224, 224, generator=g)
    mask = torch.ones(b, cfg.max_frames)
    mask[-1, 2:] = 0
    frames[-1, 2:] = 0
    ids = torch.zeros(2, cfg.max_words, dtype=torch.long)
    ids[:, 0], ids[0, 1:4], ids[0, 4] = 49406, torch.tensor([320, 1929, 539]), 49407
    ids[1, 1], ids[1, 2] = 4558, 49407
    return frames, mask, ids


def test_official_head_key_names_and_shapes():
    from muse_tvr.engine.mamba import MuseHead
    head = MuseHead(VIT_B_32.head)
    got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    want = {f"MS_mamba.{i}.{k}": s for i in range(4) for k, s in OFFICIAL_BLOCK.items()}
    assert got == want


def test_official_clip_key_names():
    from muse_tvr.engine.clip import Clip
    keys = set(Clip(VIT_B_32.vision, VIT_B_32.text).state_dict())
    assert "visual.conv1.weight" in keys and "visual.proj" in keys and "text_projection" in keys
    assert "visual.transformer.resblocks.11.attn.in_proj_weight" in keys
    assert "transformer.resblocks.11.mlp.c_proj.bias" in keys and "logit_scale" in keys
    assert not [k for k in keys if k.startswith("text.")]


def test_reference_checkpoint_and_sidecar_reproduce_outputs(tiny, tmp_path):
    ref = model_to_reference_names(tiny)
    ckpt = {k: v for k, v in ref.items() if not k.startswith("mamba_stages.")}
    # The reference stores some CLIP tensors in fp16; the MUSE part is fp32.
    ckpt["clip.token_embedding.weight"] = ckpt["clip.token_embedding.weight"].clone()
    torch.save(ckpt, tmp_path / "pytorch_model.bin.4")
    from muse_tvr.engine.sidecar import save_sidecar
    save_sidecar({k: v for k, v in ref.items() if k.startswith("mamba_stages.")}, tmp_path / "pyramid.safetensors")
    loaded = load_reference_checkpoint(tmp_path / "pytorch_model.bin.4", tmp_path / "pyramid.safetensors",
                                       config=TINY).eval()
    frames, mask, ids = _inputs(TINY)
    assert torch.equal(loaded.encode_video(frames, mask), tiny.encode_video(frames, mask))
    assert torch.equal(loaded.encode_text(ids), tiny.encode_text(ids))
    assert loaded.weight_sources == {"clip": "loaded", "pyramid": "loaded", "head": "loaded"}


def test_reference_checkpoint_without_sidecar_warns(tiny, tmp_path):
    ckpt = {k: v for k, v in model_to_reference_names(tiny).items() if not k.startswith("mamba_stages.")}
    with pytest.warns(UserWarning, match="WITHOUT a pyramid sidecar"):
        m = load_reference_checkpoint(ckpt, config=TINY)
    assert m.weight_sources["pyramid"] == "random"


def test_reference_checkpoint_ignores_other_heads_modules(tiny):
    ref = model_to_reference_names(tiny)
    ref["similarity_dense.weight"] = torch.zeros(1, 64)
    m = load_reference_checkpoint(ref, config=TINY)
    assert m.weight_sources["head"] == "loaded"


def test_own_format_round_trip(tiny, tmp_path):
    save_pretrained(tiny, tmp_path / "m")
    back = load_pretrained(tmp_path / "m").eval()
    assert back.config == TINY
    for (k1, v1), (k2, v2) in zip(tiny.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    frames, mask, _ = _inputs(TINY, b=1)
    assert torch.equal(back.encode_video(frames, mask), tiny.encode_video(frames, mask))
    assert isinstance(load_model(tmp_path / "m"), MuseModel)


def test_clip_from_torchscript_archive(tiny, tmp_path):
    """OpenAI distributes CLIP as a TorchScript archive; build one with the same key names."""
    sd = {k[len("clip."):]: v for k, v in model_to_reference_names(tiny).items() if k.startswith("clip.")}

    class Holder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Holder()
    for key, value in sd.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, Holder())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    root.register_buffer("input_resolution", torch.tensor(224))  # hyper-parameter entries are dropped
    torch.jit.save(torch.jit.script(root), str(tmp_path / "ViT-tiny.pt"))
    m = load_clip(tmp_path / "ViT-tiny.pt", config=TINY).eval()
    _, _, ids = _inputs(TINY)
    assert torch.equal(m.encode_text(ids), tiny.encode_text(ids))
    assert m.weight_sources["head"] == "random"


def test_infer_config_recognises_presets(tiny):
    sd = model_to_reference_names(tiny)
    assert infer_config(sd, "clip.") == TINY
    full = model_to_reference_names(MuseModel(VIT_B_32))
    assert infer_config(full, "clip.") == VIT_B_32


def test_bad_checkpoints_list_every_problem(tiny, tmp_path):
    ref = model_to_reference_names(tiny)
    del ref["MS_mamba.0.mamba.D_b"]
    del ref["clip.visual.proj"]
    ref["MS_mamba.1.mamba.A_log"] = torch.zeros(3, 3)
    ref["clip.bogus.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        load_reference_checkpoint(ref, config=TINY)
    msg = str(e.value)
    for needle in ("2 missing keys", "MS_mamba.0.mamba.D_b", "clip.visual.proj", "unexpected keys",
                   "clip.bogus.weight", "MS_mamba.1.mamba.A_log: checkpoint (3, 3)"):
        assert needle in msg, msg


def test_truncated_and_missing_files(tiny, tmp_path):
    path = tmp_path / "pytorch_model.bin.1"
    torch.save(model_to_reference_names(tiny), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_state_dict(tmp_path / "nope.bin")
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="x.safetensors"):
        read_state_dict(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)


def test_failed_load_leaves_model_untouched(tiny):
    model = MuseModel(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model_to_reference_names(tiny)
    ref["MS_mamba.1.mamba.D"] = torch.zeros(5)
    from muse_tvr.engine.weights import load_reference_names
    with pytest.raises(CheckpointError):
        load_reference_names(model, ref, ("clip", "head", "pyramid"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pickle_loading_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))
    torch.save({"x": Evil()}, tmp_path / "evil.bin", _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError, match=re.escape("evil.bin")):
        read_state_dict(tmp_path / "evil.bin")


def test_sidecar_for_another_backbone_is_refused(tiny, tmp_path):
    from muse_tvr.engine.sidecar import save_sidecar
    ref = model_to_reference_names(tiny)
    pyramid = {k: v for k, v in ref.items() if k.startswith("mamba_stages.")}
    save_sidecar(pyramid, tmp_path / "p.safetensors", {"backbone": "ViT-B/16", "seed": 42})
    ckpt = {k: v for k, v in ref.items() if not k.startswith("mamba_stages.")}
    with pytest.raises(ValueError, match="made for backbone 'ViT-B/16'"):
        load_reference_checkpoint(ckpt, tmp_path / "p.safetensors", config=TINY)
    save_sidecar(pyramid, tmp_path / "q.safetensors", {"backbone": "tiny", "seed": 42})
    m = load_reference_checkpoint(ckpt, tmp_path / "q.safetensors", config=TINY)
    assert m.weight_sources["pyramid"] == "loaded"
