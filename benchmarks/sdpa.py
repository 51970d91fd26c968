"""Which scaled-dot-product-attention kernel the Transformer baselines ran: restrict SDPA to one backend
for a run and name the kernel that executed, so the benchmark records say what was timed."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# PyTorch does not say which backend it would choose, but the aten op that executes does: a dispatch
# mode records the ops one small SDPA call runs (the profiler would too, but prints noise on CPU builds).
_SDPA_OPS = {
    "aten._scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten._scaled_dot_product_flash_attention": "flash (CUDA)",
    "aten._scaled_dot_product_cudnn_attention": "cuDNN",
    "aten._scaled_dot_product_efficient_attention": "memory-efficient",
    "aten._scaled_dot_product_fused_attention_overrideable": "fused (overrideable)",
}
BACKEND_CHOICES = ("auto", "flash", "cudnn", "efficient", "math")


def sdpa_context(backend: str = "auto"):
    """A context that restricts SDPA to one backend ("auto" leaves PyTorch's choice)."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown SDPA backend {backend!r}; choose one of {BACKEND_CHOICES}")
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    which = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    return sdpa_kernel([which])


def detect_sdpa_backend(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        backend: str = "auto", length: int = 64, d_model: int = 512, heads: int = 8) -> str:
    """Run one small SDPA call under the profiler and name the kernel that executed."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func).rsplit(".", 1)[0])
            return func(*args, **(kwargs or {}))

    q = torch.randn(1, heads, length, d_model // heads, device=device, dtype=dtype)
    with sdpa_context(backend), _Recorder() as rec:
        F.scaled_dot_product_attention(q, q, q)
    found = [label for op, label in _SDPA_OPS.items() if op in rec.ops]
    if found:
        return ", ".join(found)
    # The math backend is not one op: it decomposes into matmuls and a softmax.
    if "aten.bmm" in rec.ops and any("softmax" in op for op in rec.ops):
        return "math"
    return "unknown (ops: " + ", ".join(dict.fromkeys(rec.ops)) + ")"
