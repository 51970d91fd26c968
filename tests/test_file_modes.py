"""Files the engine writes get the umask's mode; a sidecar without its checksum is refused."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from muse_tvr.engine.config import get_config
from muse_tvr.engine.sidecar import load_sidecar, make_pyramid_sidecar, save_sidecar
from muse_tvr.engine.weights import load_model, save_pretrained


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sidecar_and_model_honour_umask(tmp_path, umask_022):
    tiny = get_config("tiny")
    save_sidecar(make_pyramid_sidecar(tiny, seed=1), tmp_path / "p.safetensors", meta={"backbone": tiny.name})
    assert _mode(tmp_path / "p.safetensors") == 0o644
    save_pretrained(load_model(None, None, tiny), tmp_path / "m")
    assert _mode(tmp_path / "m" / "model.safetensors") == 0o644


def test_sidecar_without_sha256_is_refused(tmp_path):
    from safetensors.torch import save_file

    tiny = get_config("tiny")
    state = make_pyramid_sidecar(tiny, seed=1)
    path = tmp_path / "stripped.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"backbone": tiny.name})
    with pytest.raises(ValueError, match="no sha256"):
        load_sidecar(path, tiny)
    assert torch.is_tensor(next(iter(state.values())))
