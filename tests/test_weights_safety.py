"""TorchScript archives are read without running code stored in them."""
from __future__ import annotations

import torch
from torch import nn

from muse_tvr.engine.weights import read_state_dict


class _Trap(nn.Module):
    """Its scripted __setstate__ creates a file when the archive is loaded with torch.jit.load."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.weight = nn.Parameter(torch.ones(3), requires_grad=False)

    @torch.jit.export
    def __getstate__(self):
        return (self.target, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
        self.target = state[0]
        self.training = state[2]
        # The mapped file is used in the result so the call cannot be dropped as dead code.
        self.weight = state[1] + torch.from_file(self.target, shared=True, size=3) * 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_scripted_setstate_is_not_run(tmp_path):
    target = tmp_path / "pwned"
    archive = tmp_path / "trap.pt"
    torch.jit.save(torch.jit.script(_Trap(str(target))), str(archive))
    assert not target.exists()
    torch.jit.load(str(archive))  # the trap works when the archive is executed
    assert target.exists()
    target.unlink()
    try:
        read_state_dict(archive)
    except ValueError:
        pass  # refusing the archive is fine; running its code is not
    assert not target.exists()


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.attn_mask = torch.full((3,), 2.0)  # a tensor attribute, neither parameter nor buffer
        self.register_buffer("scale", torch.tensor([1.5], dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x + self.attn_mask)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(_Block(), _Block())
        self.proj = nn.Parameter(torch.arange(6.0).reshape(2, 3).t())  # non-contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[0](x)


def test_archive_tensors_match_torch_jit_state_dict(tmp_path):
    import warnings

    archive = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(_Net()), str(archive))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = read_state_dict(archive)
    theirs = torch.jit.load(str(archive)).state_dict()
    assert sorted(ours) == sorted(theirs)
    for k, v in theirs.items():
        assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), k


def test_info_on_a_trap_archive_writes_nothing(tmp_path, capsys):
    from muse_tvr import cli

    target = tmp_path / "pwned"
    archive = tmp_path / "trap.pt"
    torch.jit.save(torch.jit.script(_Trap(str(target))), str(archive))
    rc = cli.main(["info", "--model", str(archive)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(archive) in err
    assert not target.exists()
