"""Pyramid levels: shapes, key layout per scale, floor pooling, token order; CLIP loading from open_clip."""
import pytest
import torch
import torch.nn.functional as F

from muse_tvr.engine.config import HeadConfig, VisionConfig
from muse_tvr.engine.pyramid import FeaturePyramid


@pytest.mark.parametrize("grid", [7, 14])
def test_level_shapes_for_every_scale(grid):
    from muse_tvr.kernels.pyramid import pyramid_level_ref, stage_params
    head = HeadConfig(d_model=32, scales=(0.25, 0.5, 1.0, 2.0, 4.0))
    pyr = FeaturePyramid(head, VisionConfig(patch_size=224 // grid)).eval()
    fmap = torch.randn(2, 32, grid, grid)
    sides = [grid // 4, grid // 2, grid, grid * 2, grid * 4]
    with torch.no_grad():
        for i, (s, side) in enumerate(zip(head.scales, sides)):
            assert pyramid_level_ref(fmap, stage_params(pyr, i, s), s).shape == (2, 32, side, side)
        seq = pyr(torch.randn(2, 3, 1 + grid * grid, 32))
    assert seq.shape == (2, 3 * (1 + sum(s * s for s in sides)), 32)


def test_stage_layouts_match_reference_indices():
    head = HeadConfig(d_model=32, scales=(0.25, 0.5, 1.0, 2.0, 4.0))
    keys = FeaturePyramid(head, VisionConfig()).state_dict()
    names = lambda k: sorted({n.split(".")[2] for n in keys if n.startswith(f"mamba_stages.{k}.")})  # noqa: E731
    assert names(0) == ["1", "2", "4", "5"]                 # MaxPool4, Conv1x1, LN, GELU, Conv3x3, LN
    assert names(1) == ["1", "2", "4", "5"]                 # MaxPool2, ...
    assert names(2) == ["0", "1", "3", "4"]                 # Conv1x1, LN, GELU, Conv3x3, LN
    assert names(3) == ["0", "1", "2", "4", "5"]            # ConvT(C->C/2), Conv1x1(C/2->C), ...
    assert names(4) == ["0", "1", "3", "4", "5", "7", "8"]  # ConvT, LN, GELU, ConvT(C/2->C/4), Conv1x1, ...
    assert keys["mamba_stages.3.1.weight"].shape == (32, 16, 1, 1)
    assert keys["mamba_stages.4.4.weight"].shape == (32, 8, 1, 1)


def test_half_scale_pools_with_floor_and_keeps_row_major_order():
    """7x7 -> 3x3 drops the last row and column; tokens come out row-major (h, w)."""
    head = HeadConfig(d_model=8, scales=(0.5,))
    pyr = FeaturePyramid(head, VisionConfig())
    stage = pyr.mamba_stages[0]
    x = torch.randn(1, 1, 50, 8)  # CLS, then the 7 x 7 patch grid
    with torch.no_grad():
        got = pyr(x)[:, 1:]  # the sequence is [CLS, level tokens]
        fmap = x[:, :, 1:].reshape(1, 7, 7, 8).permute(0, 3, 1, 2)
        pooled = F.max_pool2d(fmap[:, :, :6, :6], 2)  # the 7th row/column never matter
        def ln(y, m):  # LayerNorm over the channels of an NCHW map
            return F.layer_norm(y.permute(0, 2, 3, 1), (8,), m.weight, m.bias).permute(0, 3, 1, 2)
        y = F.gelu(ln(stage[1](pooled), stage[2]))
        want = ln(stage[4](y), stage[5]).flatten(2).transpose(1, 2)
    assert torch.equal(got, want)
    with torch.no_grad():
        x2 = x.clone()
        x2[0, 0, 1 + 6::7] += 100.0  # last column of every row
        x2[0, 0, 1 + 42:] += 100.0  # last row
        assert torch.equal(pyr(x2)[:, 1:], got)


def test_wrong_token_shape_is_rejected():
    pyr = FeaturePyramid(HeadConfig(d_model=8), VisionConfig())
    with pytest.raises(ValueError, match="square patch grid"):
        pyr(torch.zeros(1, 1, 49, 8))  # the CLS token is missing


def test_open_clip_state_dict_loads_through_load_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from muse_tvr.engine.weights import load_clip
    oc = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    torch.save(oc.state_dict(), tmp_path / "open_clip_vitb32.bin")
    model = load_clip(tmp_path / "open_clip_vitb32.bin").eval()
    assert model.config.name == "ViT-B/32"
    ids = torch.zeros(1, 77, dtype=torch.long)
    ids[0, :4] = torch.tensor([49406, 320, 1929, 49407])
    with torch.no_grad():
        want = F.normalize(oc.encode_text(ids), dim=-1)
        got = model.encode_text(ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
