"""The engine's MUSE head against an independent float64 statement of docs/model.md sections 3-6.

The independent version below is written from the spec with explicit loops and flips (the engine walks
the backward scan by index instead), using only the checkpoint's tensors by their reference names.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close
from muse_tvr.engine.backend import names as backend_names
from muse_tvr.engine.config import TINY, HeadConfig, MuseConfig, VisionConfig
from muse_tvr.engine.mamba import MuseBlock
from muse_tvr.engine.model import MuseModel
from muse_tvr.engine.weights import model_to_reference_names


def softplus(x):
    return torch.where(x > 20, x, torch.log1p(torch.exp(x)))


def branch_f64(x, conv_w, conv_b, W_x, W_dt, b_dt, A_log, D):
    L, di = x.shape
    width = conv_w.shape[-1]
    conv_w = conv_w.reshape(di, width)
    u = torch.zeros_like(x)
    for t in range(L):
        acc = conv_b.clone()
        for k in range(width):
            idx = t - (width - 1) + k
            if idx >= 0:
                acc = acc + conv_w[:, k] * x[idx]
        u[t] = acc
    u = u * torch.sigmoid(u)
    xd = u @ W_x.T
    r = W_dt.shape[1]
    n = A_log.shape[1]
    dt_in, Bm, Cm = xd[:, :r], xd[:, r:r + n], xd[:, r + n:r + 2 * n]
    dt = softplus(dt_in @ W_dt.T + b_dt)
    A = -torch.exp(A_log)
    s = torch.zeros(di, n, dtype=x.dtype)
    y = torch.zeros_like(x)
    for t in range(L):
        s = torch.exp(dt[t][:, None] * A) * s + (dt[t] * u[t])[:, None] * Bm[t][None, :]
        y[t] = s @ Cm[t] + D * u[t]
    return y


def block_f64(x, p, i):
    """x (L, d) float64; p: reference-named tensors; i: block index."""
    g = lambda name: p[f"MS_mamba.{i}.{name}"].double()  # noqa: E731
    h = F.layer_norm(x, (x.shape[-1],), g("layer_norm1.weight"), g("layer_norm1.bias"), 1e-5)
    xz = h @ g("mamba.in_proj.weight").T
    di = xz.shape[-1] // 2
    xx, z = xz[:, :di], xz[:, di:]
    y_f = branch_f64(xx, g("mamba.conv1d.weight"), g("mamba.conv1d.bias"), g("mamba.x_proj.weight"),
                     g("mamba.dt_proj.weight"), g("mamba.dt_proj.bias"), g("mamba.A_log"), g("mamba.D"))
    y_b = branch_f64(xx.flip(0), g("mamba.conv1d_b.weight"), g("mamba.conv1d_b.bias"),
                     g("mamba.x_proj_b.weight"), g("mamba.dt_proj_b.weight"), g("mamba.dt_proj_b.bias"),
                     g("mamba.A_b_log"), g("mamba.D_b")).flip(0)
    out = (y_f * F.silu(z) + y_b * F.silu(z)) @ g("mamba.out_proj.weight").T
    return x + out @ g("temporal_fc.weight").T + g("temporal_fc.bias")


def channel_ln(x, w, b):
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, 1e-5).permute(0, 3, 1, 2)


def pyramid_f64(fmap, p, scales):
    """fmap (N, C, g, g) float64 -> list of (N, h*w, C) for each scale."""
    outs = []
    for k, s in enumerate(scales):
        g = lambda name: p[f"mamba_stages.{k}.{name}"].double()  # noqa: E731
        x, first = fmap, {0.5: 1, 1.0: 0, 2.0: 1}[s]
        if s == 0.5:
            x = F.max_pool2d(x, 2, 2)
        if s == 2.0:
            x = F.conv_transpose2d(x, g("0.weight"), g("0.bias"), stride=2)
        x = F.conv2d(x, g(f"{first}.weight"), g(f"{first}.bias"))
        x = channel_ln(x, g(f"{first + 1}.weight"), g(f"{first + 1}.bias"))
        x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        x = F.conv2d(x, g(f"{first + 3}.weight"), g(f"{first + 3}.bias"), padding=1)
        x = channel_ln(x, g(f"{first + 4}.weight"), g(f"{first + 4}.bias"))
        outs.append(x.flatten(2).transpose(1, 2))
    return outs


def head_f64(tokens, mask, p, cfg: MuseConfig):
    """tokens (B, T, 1+g*g, C) -> video embedding (B, C), all float64, scale-wise order."""
    b, t, n, c = tokens.shape
    g = cfg.vision.grid
    emb = []
    for bi in range(b):
        fmap = tokens[bi, :, 1:].reshape(t, g, g, c).permute(0, 3, 1, 2)
        levels = pyramid_f64(fmap, p, cfg.head.scales)
        seq = torch.cat([tokens[bi, :, 0]] + [lv.reshape(-1, c) for lv in levels], dim=0)
        for i in range(cfg.head.depth):
            seq = block_f64(seq, p, i)
        v = seq[:t]
        v = v / v.norm(dim=-1, keepdim=True)
        v = (v * mask[bi, :, None]).sum(0) / max(mask[bi].sum().item(), 1.0)
        emb.append(v / v.norm())
    return torch.stack(emb)


@pytest.mark.parametrize("length", [1, 7, 30])
def test_block_matches_float64_loop(length):
    cfg = HeadConfig(d_model=24, depth=1, d_state=4, dt_rank=3)
    block = MuseBlock(cfg).eval()
    with torch.no_grad():  # randomise everything so no term can hide behind an init value
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    p = {f"MS_mamba.0.{k}": v for k, v in block.state_dict().items()}
    x = torch.randn(2, length, 24)
    with torch.no_grad():
        got = block(x)
    for bi in range(2):
        want = block_f64(x[bi].double(), p, 0)
        assert_close(got[bi], want, 2e-5, 2e-5, f"block, batch {bi}")


def test_backward_direction_matters():
    """Flipping the backward-direction parameters changes the output: both directions are live."""
    cfg = HeadConfig(d_model=16, depth=1, d_state=4)
    block = MuseBlock(cfg).eval()
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        before = block(x)
        block.mamba.D_b.add_(1.0)
        after = block(x)
    assert (before - after).abs().max() > 1e-3


def test_head_with_padded_frames_matches_float64():
    cfg = TINY
    model = MuseModel(cfg).eval()
    p = model_to_reference_names(model)
    b, t = 2, cfg.max_frames
    frames = torch.randn(b, t, 3, 224, 224)
    mask = torch.ones(b, t)
    frames[0, 3:] = 0  # zero frames in normalised space, as the reference pads
    mask[0, 3:] = 0
    frames[1, 1:] = 0
    mask[1, 1:] = 0
    with torch.no_grad():
        tokens = model.encode_frames(frames)
        got = model.encode_video(frames, mask)
    want = head_f64(tokens.double(), mask.double(), {k: v.double() for k, v in p.items()}, cfg)
    assert_close(got, want, 1e-5, 1e-5, "video embedding")
    # The padded frames still feed the sequence: changing a padded frame's tokens changes the result.
    tokens2 = tokens.clone()
    tokens2[0, 3] += 1.0
    with torch.no_grad():
        changed = model.encode_tokens(tokens2, mask)
    assert (changed[0] - got[0]).abs().max() > 1e-6


def test_sequence_length_and_orders():
    from muse_tvr.engine.sequence import readout
    from muse_tvr.kernels.pyramid import assemble_sequence
    cfg = MuseConfig()
    assert cfg.sequence_length() == 3060
    assert MuseConfig(vision=VisionConfig(patch_size=16)).sequence_length() == 12360
    b, t, c = 1, 2, 1
    cls = torch.tensor([[[100.0], [200.0]]])
    lv0 = torch.tensor([[[[1.0], [2.0]], [[3.0], [4.0]]]])  # (1, 2 frames, 2 tokens, 1)
    lv1 = torch.tensor([[[[5.0]], [[6.0]]]])  # (1, 2, 1, 1)
    assert assemble_sequence(cls, [lv0, lv1], "scale_wise").flatten().tolist() == [100, 200, 1, 2, 3, 4, 5, 6]
    fw = assemble_sequence(cls, [lv0, lv1], "frame_wise")
    assert fw.flatten().tolist() == [100, 1, 2, 5, 200, 3, 4, 6]
    assert readout(fw, t, "frame_wise").flatten().tolist() == [100, 200]
    sw = assemble_sequence(cls, [lv0, lv1], "spatial_wise")
    assert sw.flatten().tolist() == [100, 200, 2, 3, 5.5]


@pytest.mark.parametrize("name", backend_names())
def test_every_backend_matches_float64_from_an_official_checkpoint(name, tmp_path):
    """The user's path on every backend: a reference-format checkpoint (its separate pyramid sidecar
    merged into the file) -> load_model -> video embeddings and scores, against the float64 statement."""
    import warnings

    from muse_tvr.engine.weights import load_model
    if name == "ort":
        from onnx_helpers import built_cpp
        built_cpp()  # the op library, built with the documented `make -C cpp`
    torch.manual_seed(3)
    source = MuseModel(TINY).eval()
    with torch.no_grad():
        for p in source.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = model_to_reference_names(source)
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(ckpt, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads without the no-sidecar warning
        model = load_model(path).eval().set_backend(name)
    b, t = 2, 2
    tokens = torch.randn(b, t, 50, TINY.embed_dim)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    got = model.encode_tokens(tokens, mask)
    want = head_f64(tokens.double(), mask.double(), {k: v.double() for k, v in ckpt.items()}, TINY)
    assert_close(got, want, 2e-5, 2e-5, f"{name}: video embedding")
    ids = torch.zeros(3, TINY.max_words, dtype=torch.long)
    ids[:, 0], ids[:, 1], ids[:, 2] = 49406, torch.tensor([320, 1929, 2368]), 49407
    text = model.encode_text(ids)
    scale = ckpt["clip.logit_scale"].double().exp()
    assert_close(model.similarity(text, got), scale * text.double() @ want.t(), 2e-4, 2e-5, f"{name}: scores")
