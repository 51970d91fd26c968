"""The Transformer baseline: parameter counts, readout equivalence with MuseModel, non-causal attention,
mask semantics."""
import pytest
import torch

from muse_tvr.engine.config import TINY, VIT_B_32
from muse_tvr.engine.mamba import MuseHead
from muse_tvr.engine.model import MuseModel
from muse_tvr.engine.sequence import pool_frames, readout
from muse_tvr.engine.transformer_head import (MUSE_HEAD_PARAMS_B32, TransformerHead, TransformerHeadConfig,
                                              TransformerLearner, depth_matched, parameter_matched)

from helpers import assert_close


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_depth_matched_parameter_count_matches_spec():
    cfg = depth_matched()
    assert (cfg.depth, cfg.heads, cfg.mlp_hidden) == (4, 8, 2048)
    assert cfg.parameter_count() == 12_609_536  # docs/model.md section 8
    with torch.device("meta"):
        assert count(TransformerHead(cfg)) == 12_609_536


def test_parameter_matched_is_within_a_block_row_of_the_muse_head():
    with torch.device("meta"):
        muse = count(MuseHead(VIT_B_32.head))
    assert muse == MUSE_HEAD_PARAMS_B32
    cfg = parameter_matched(muse)
    with torch.device("meta"):
        n = count(TransformerHead(cfg))
    assert n == cfg.parameter_count()
    assert abs(n - muse) <= cfg.depth * (2 * cfg.d_model + 1) // 2  # closest hidden width
    assert (cfg.depth, cfg.mlp_hidden) == (2, 1259)
    with pytest.raises(ValueError, match="exceed"):
        parameter_matched(1000)


def test_learner_shares_pyramid_sequence_and_readout_with_muse():
    torch.manual_seed(1)
    learner = TransformerLearner(TINY, TransformerHeadConfig(d_model=64, depth=2, heads=4, mlp_hidden=128)).eval()
    muse = MuseModel(TINY).eval()
    muse.pyramid.load_state_dict(learner.pyramid.state_dict())
    tokens = torch.randn(2, 3, 50, 64)
    mask = torch.tensor([[1., 1., 0.], [1., 0., 0.]])
    with torch.no_grad():
        seq = learner.pyramid(tokens)
        assert_close(seq, muse.pyramid(tokens), 0.0, name="sequence")
    assert seq.shape == (2, TINY.replace(max_frames=3).sequence_length(), 64)
    expected = pool_frames(readout(learner.head(seq), 3), mask)
    got = learner.encode_tokens(tokens, mask)
    assert_close(got, expected, 1e-6, name="embedding")
    assert_close(got.norm(dim=-1), torch.ones(2), 1e-5, name="unit norm")


@torch.no_grad()
def test_attention_is_not_causal():
    torch.manual_seed(2)
    head = TransformerHead(TransformerHeadConfig(d_model=32, depth=1, heads=4, mlp_hidden=64)).eval()
    x = torch.randn(1, 20, 32)
    y = head(x)
    x2 = x.clone()
    x2[:, -1] += torch.randn(32)  # only the LAST token changes (not by a constant: LayerNorm removes it)
    y2 = head(x2)
    assert (y2[:, 0] - y[:, 0]).abs().max() > 1e-4, "position 0 must see the last token"
    # ...and a per-token reference with full (non-causal) softmax attention agrees.
    blk = head.blocks[0]
    h = blk.ln1(x)
    q, k, v = blk.attn.qkv(h).view(1, 20, 3, 4, 8).permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1) @ v
    ref = x + blk.attn.proj(att.transpose(1, 2).reshape(1, 20, 32))
    ref = ref + blk.mlp(blk.ln2(ref))
    assert_close(y, ref, 1e-5, name="block")


def test_mask_only_pools_padded_frames_still_mix():
    torch.manual_seed(3)
    learner = TransformerLearner(TINY, TransformerHeadConfig(d_model=64, depth=1, heads=4, mlp_hidden=64)).eval()
    tokens = torch.randn(1, 3, 50, 64)
    full = learner.encode_tokens(tokens, torch.ones(1, 3))
    assert_close(full, learner.encode_tokens(tokens), 0.0, name="mask None == all ones")
    mask = torch.tensor([[1., 1., 0.]])
    a = learner.encode_tokens(tokens, mask)
    changed = tokens.clone()
    changed[:, 2] += torch.randn(50, 64)  # a padded frame: excluded from pooling, but it is in the sequence (as in MUSE)
    b = learner.encode_tokens(changed, mask)
    assert (a - b).abs().max() > 1e-5
    with pytest.raises(ValueError, match="mask must have shape"):
        learner.encode_tokens(tokens, torch.ones(1, 2))
    with pytest.raises(ValueError, match="only 0"):
        learner.encode_tokens(tokens, torch.full((1, 3), 0.5))
    with pytest.raises(ValueError, match="tokens must have shape"):
        learner.encode_tokens(torch.randn(1, 3, 49, 64))
