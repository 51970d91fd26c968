"""Triton depthwise conv1d over time, both directions of a bidirectional Mamba in one launch.

Layout (B, L, D), token-major, as `in_proj` produces it (x may be a strided view such as the first half of
xz: only the channel stride must be 1). One program computes a [BLOCK_L, BLOCK_D] tile of BOTH outputs:
  u_f[t] = silu(b_f + sum_k w_f[k] * x[t - (W-1) + k])     causal (zero padding before t = 0)
  u_b[t] = silu(b_b + sum_k w_b[k] * x[t + (W-1) - k])     anti-causal (zero padding after t = L-1)
so x is read from memory once per tile for both directions (the W shifted re-reads hit the cache).
Arithmetic is float32; outputs are contiguous (B, L, D) in x.dtype.

The reference is `causal_conv1d_ref` (reverse False / True); `bidirectional_causal_conv_ref` pairs them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import triton_interpreting

MAX_WIDTH = 4


@triton.jit
def _biconv_kernel(x_ptr, wf_ptr, bf_ptr, wb_ptr, bb_ptr,
                   L, D, stride_xb, stride_xl,
                   uf_ptr, ub_ptr,
                   W: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    # AOT ABI (docs/kernels.md "AOT"): input pointers, int32 scalars, output pointers; no float scalars.
    pid_b = tl.program_id(0)
    pid_l = tl.program_id(1)
    pid_d = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    md = offs_d < D
    x_base = x_ptr + pid_b.to(tl.int64) * stride_xb
    acc_f = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32) + tl.load(bf_ptr + offs_d, mask=md, other=0.0).to(tl.float32)[None, :]
    acc_b = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32) + tl.load(bb_ptr + offs_d, mask=md, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(W):
        w_f = tl.load(wf_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
        w_b = tl.load(wb_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
        t_f = offs_l - (W - 1) + k
        t_b = offs_l + (W - 1) - k
        m_f = ((t_f >= 0) & (t_f < L))[:, None] & md[None, :]
        m_b = (t_b < L)[:, None] & md[None, :]
        x_f = tl.load(x_base + t_f[:, None] * stride_xl + offs_d[None, :], mask=m_f, other=0.0).to(tl.float32)
        x_b = tl.load(x_base + t_b[:, None] * stride_xl + offs_d[None, :], mask=m_b, other=0.0).to(tl.float32)
        acc_f += w_f[None, :] * x_f
        acc_b += w_b[None, :] * x_b
    # silu(a) = a * sigmoid(a), written with exp so the interpreter and the GPU use the same formula.
    y_f = acc_f / (1.0 + tl.exp(-acc_f))
    y_b = acc_b / (1.0 + tl.exp(-acc_b))
    out_off = pid_b.to(tl.int64) * L * D + offs_l[:, None] * D + offs_d[None, :]
    m_out = (offs_l < L)[:, None] & md[None, :]
    tl.store(uf_ptr + out_off, y_f.to(uf_ptr.dtype.element_ty), mask=m_out)
    tl.store(ub_ptr + out_off, y_b.to(ub_ptr.dtype.element_ty), mask=m_out)


def _conv_weight(w: torch.Tensor, d: int, name: str) -> torch.Tensor:
    if w.dim() == 3 and w.shape[1] == 1:
        w = w[:, 0]
    if w.dim() != 2 or w.shape[0] != d:
        raise ValueError(f"{name} must be (D={d}, W) or (D, 1, W), got {tuple(w.shape)}")
    if not 1 <= w.shape[1] <= MAX_WIDTH:
        raise ValueError(f"{name}: conv width {w.shape[1]} is not supported (1..{MAX_WIDTH})")
    return w.contiguous()


def _conv_bias(b: torch.Tensor | None, d: int, like: torch.Tensor, name: str) -> torch.Tensor:
    if b is None:
        return torch.zeros(d, dtype=torch.float32, device=like.device)
    if tuple(b.shape) != (d,):
        raise ValueError(f"{name} must be (D={d},), got {tuple(b.shape)}")
    return b.contiguous()


def default_conv_blocks(d: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_D). Under the interpreter programs run one after another, so fewer, larger tiles
    are faster; on a GPU a 32x64 tile gives enough programs for realistic (B, L) and 16-byte loads."""
    if interpret:
        return 64, min(triton.next_power_of_2(d), 128)
    return 32, min(triton.next_power_of_2(d), 64)


def bidirectional_causal_conv_triton(x: torch.Tensor, w_f: torch.Tensor, b_f: torch.Tensor | None,
                                     w_b: torch.Tensor, b_b: torch.Tensor | None,
                                     block_l: int | None = None, block_d: int | None = None
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise conv + bias + SiLU, causal and anti-causal, in one launch.

    x: (B, L, D) float32/float16/bfloat16, channel stride 1 (a row-strided view is fine);
    w_f, w_b: (D, W) or (D, 1, W) with W <= 4; b_f, b_b: (D,) or None.
    Returns (u_f, u_b), each contiguous (B, L, D) in x.dtype, equal to
    causal_conv1d_ref(x, w_f, b_f, "silu", reverse=False) and (..., w_b, b_b, "silu", reverse=True).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (B, L, D) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    bsz, length, d = x.shape
    w_f, w_b = _conv_weight(w_f, d, "w_f"), _conv_weight(w_b, d, "w_b")
    if w_f.shape != w_b.shape:
        raise ValueError(f"w_f {tuple(w_f.shape)} and w_b {tuple(w_b.shape)} must have the same width")
    b_f, b_b = _conv_bias(b_f, d, x, "b_f"), _conv_bias(b_b, d, x, "b_b")
    for name, t in (("w_f", w_f), ("w_b", w_b), ("b_f", b_f), ("b_b", b_b)):
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if x.stride(2) != 1:
        x = x.contiguous()
    u_f = torch.empty((bsz, length, d), dtype=x.dtype, device=x.device)
    u_b = torch.empty_like(u_f)
    if u_f.numel() == 0:
        return u_f, u_b
    dl, dd = default_conv_blocks(d, triton_interpreting())
    block_l, block_d = block_l or dl, block_d or dd
    grid = (bsz, triton.cdiv(length, block_l), triton.cdiv(d, block_d))
    _biconv_kernel[grid](x, w_f, b_f, w_b, b_b, length, d, x.stride(0), x.stride(1), u_f, u_b,
                         W=w_f.shape[1], BLOCK_L=block_l, BLOCK_D=block_d)
    return u_f, u_b


def conv_aot_spec(dtype: str = "bf16", width: int = 4, block_l: int = 32, block_d: int = 64) -> dict:
    """What `triton.compiler.ASTSource(fn, signature, constexprs)` needs to compile `_biconv_kernel`
    ahead of time. dtype is Triton's name for the activation type ("fp32", "fp16", "bf16"); the weights
    and biases are fp32 (the engine keeps them so)."""
    signature = {"x_ptr": f"*{dtype}", "wf_ptr": "*fp32", "bf_ptr": "*fp32", "wb_ptr": "*fp32",
                 "bb_ptr": "*fp32", "L": "i32", "D": "i32", "stride_xb": "i32", "stride_xl": "i32",
                 "uf_ptr": f"*{dtype}", "ub_ptr": f"*{dtype}",
                 "W": "constexpr", "BLOCK_L": "constexpr", "BLOCK_D": "constexpr"}
    return {"fn": _biconv_kernel, "signature": signature,
            "constexprs": {"W": width, "BLOCK_L": block_l, "BLOCK_D": block_d},
            "grid": "(B, cdiv(L, BLOCK_L), cdiv(D, BLOCK_D))", "options": {"num_warps": 4}}


# name -> function(dtype="bf16", ...) returning {"fn", "signature", "constexprs", "grid", "options"}:
# triton.compile(ASTSource(fn, signature, constexprs), target=..., options=options).
AOT_SPECS = {"bidirectional_causal_conv": conv_aot_spec}
