"""Test session set-up. TRITON_INTERPRET must be set before any Triton kernel is defined, i.e. before
muse_tvr's kernel modules are imported, so it is set here at collection time."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
