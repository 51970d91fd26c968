"""PROTOTYPE v2 of the fused bidirectional selective scan (issue 14). Not wired into the engine.

Same contract as `bidirectional_scan_ref` (and `triton_scan.bidirectional_scan_triton`'s sequential
variant): token-major (Bt, L, D) / (Bt, L, N) inputs, A float32 (D, N) already negated, fp32 state, both
directions in one launch walking by index (no flipped copies), returns silu(z) * (y_f + y_b) in u_f.dtype.

What changes against v1 (whose static report shows ~71 lane instructions per (element, state)):
- Layout: the state is two [NCH, BLOCK_D, CH] fp32 tiles (CH = 4, NCH x CH = N / 2), BLOCK_D = 32 x
  num_warps. The 16-byte vector loads along the last axis (CH contiguous values) make Triton's coalescing
  choose sizePerThread [1, 1, 4], threadsPerWarp [1, 32, 1]: each lane owns one channel and holds all N
  states of it in registers (checked in the SASS: no SHFL, no BAR in the walk loops). A plain
  [BLOCK_D, N] tile gets [2 x 16]-lane layouts instead, and a CH wider than the fp32 A2 vector puts 2
  lanes on a channel. Per-channel work (loads of u/dt/z, softplus, D skip, gate, stores) is done
  once per lane instead of once per replicated lane, and y = sum_n s_n C_n (`tl.sum(axis=0)`) is a
  register-only reduction: no shuffles, no barriers in the loop. B_t / C_t are broadcast loads (every
  lane reads the same N values, one transaction per warp).
- exp2 with log2(e) folded into A on the host (A2 = A * log2 e, also transposed to (N, D) so the
  prologue load is coalesced along D), as `ex2.approx.ftz.f32` (one MUFU.EX2, no denormal fix-ups).
- Softplus once per channel per step: ln2 * lg2(1 + ex2(x log2 e)) with approx ftz MUFU ops (2 MUFU per
  channel-step = 2/N per (element, state)), identity above the mamba-ssm threshold 20.
- Both directions in one lane, interleaved (forward t = i, backward t = L-1-i): two independent
  recurrences per step. The combine is v1's (first half stores each direction's rounded y into its final
  slot; second half reads it back, adds, gates), but every slot is written and read by the same lane.

Under the interpreter (no inline PTX) FAST=False uses tl.exp2 / tl.log2 in the same formulas.
- Software prefetch (PREFETCH, default on): step i computes on values loaded during step i - 1.
- bf16 B/C (PAIRS): read as int32 words of two states with 128-bit loads; lo = w << 16, hi = w & 0xffff0000
  is the exact conversion in one ALU op per state. The states are therefore split into two tiles (lo, hi);
  A2 is permuted on the host to match (`fold_A`, `state_index`).
Not done yet: a chunk-parallel variant for small batches; EVEN_D (maskless) specialisation; GPU timing.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import triton_interpreting
from .reference import SOFTPLUS_THRESHOLD as _THRESHOLD
from .triton_scan import prepare_inputs

SOFTPLUS_THRESHOLD = tl.constexpr(_THRESHOLD)
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(LN2)


@triton.jit
def _ex2(x, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def _rcp(x, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 1.0 / x


@triton.jit
def _lg2(x, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def _vec_ptr(base, off, VEC: tl.constexpr, ALIGN: tl.constexpr):
    """base + off; ALIGN: the host checked that each lane's VEC contiguous values start on a VEC-element
    boundary, so they are one vector load (pointer divisibility is in bytes). The hints must be set on a
    value defined here: on a function argument they are silently dropped."""
    p = base + off
    if ALIGN:
        p = tl.max_contiguous(tl.multiple_of(p, [1, 1, VEC * p.dtype.element_ty.primitive_bitwidth // 8]),
                              [1, 1, VEC])
    return p


@triton.jit
def _bc_load(ptr, row, jidx, N: tl.constexpr, M: tl.constexpr, CH: tl.constexpr, PAIRS: tl.constexpr,
             ALIGN: tl.constexpr):
    """B_t or C_t broadcast to every lane (stride 0 along D), raw: the two [NCH, BLOCK_D, CH] tiles (lo, hi)
    of the state split `state_index` describes, or in PAIRS mode (bf16 read as int32 words of two states)
    the one word tile, returned twice. row: t * (row stride), in elements."""
    if PAIRS:
        p = _vec_ptr(ptr.to(tl.pointer_type(tl.int32)) + row // 2, jidx, CH, ALIGN)
        if 2 * M == N:
            w = tl.load(p)
        else:
            w = tl.load(p, mask=jidx < N // 2, other=0)
        return w, w
    else:
        nlo = (jidx // CH) * (2 * CH) + jidx % CH
        p_lo = _vec_ptr(ptr + row, nlo, CH, ALIGN)
        p_hi = _vec_ptr(ptr + row, nlo + CH, CH, ALIGN)
        if 2 * M == N:
            return tl.load(p_lo), tl.load(p_hi)
        else:
            return tl.load(p_lo, mask=nlo < N, other=0.0), tl.load(p_hi, mask=nlo + CH < N, other=0.0)


@triton.jit
def _bc_f32(r0, r1, PAIRS: tl.constexpr):
    """`_bc_load`'s raw tiles as fp32 (lo, hi). PAIRS: lo = word << 16, hi = word & 0xffff0000, one ALU
    op each (the exact bf16 -> fp32 conversion)."""
    if PAIRS:
        return (r0 << 16).to(tl.float32, bitcast=True), (r1 & -65536).to(tl.float32, bitcast=True)
    else:
        return r0.to(tl.float32), r1.to(tl.float32)


@triton.jit
def _load_tok(t, u_ptr, dt_ptr, B_ptr, C_ptr, s_ul, s_dtl, s_bcl, offs_d, md, jidx, N: tl.constexpr,
              M: tl.constexpr, CH: tl.constexpr, PAIRS: tl.constexpr, ALIGN: tl.constexpr):
    """Everything one direction reads for the token at t, raw (issued one step ahead: the prefetch)."""
    u = tl.load(u_ptr + t * s_ul + offs_d, mask=md, other=0.0)
    x = tl.load(dt_ptr + t * s_dtl + offs_d, mask=md, other=0.0)
    b0, b1 = _bc_load(B_ptr, t * s_bcl, jidx, N, M, CH, PAIRS, ALIGN)
    c0, c1 = _bc_load(C_ptr, t * s_bcl, jidx, N, M, CH, PAIRS, ALIGN)
    return u, x, b0, b1, c0, c1


@triton.jit
def _advance(s_lo, s_hi, u, x, b0, b1, c0, c1, md, A_lo, A_hi, Dv, bias, PAIRS: tl.constexpr,
             FAST: tl.constexpr):
    """Advance one direction by one token (`_load_tok`'s values). States and A2 are split in two fp32
    [NCH, BLOCK_D, CH] tiles (lo, hi), each lane holding its channel's 2 x NCH x CH states.
    Returns (s_lo, s_hi, y), y: [BLOCK_D] fp32."""
    u = u.to(tl.float32)
    x = x.to(tl.float32) + bias
    sp = _LN2 * _lg2(1.0 + _ex2(x * _LOG2E, FAST), FAST)
    dt = tl.where(x > SOFTPLUS_THRESHOLD, x, sp)
    dt = tl.where(md, dt, 0.0)
    B_lo, B_hi = _bc_f32(b0, b1, PAIRS)
    C_lo, C_hi = _bc_f32(c0, c1, PAIRS)
    dt3 = dt[None, :, None]
    du3 = (dt * u)[None, :, None]
    s_lo = _ex2(dt3 * A_lo, FAST) * s_lo + B_lo * du3
    s_hi = _ex2(dt3 * A_hi, FAST) * s_hi + B_hi * du3
    y = tl.sum(tl.sum(s_lo * C_lo + s_hi * C_hi, axis=2), axis=0) + Dv * u
    return s_lo, s_hi, y


@triton.jit
def _biscan_v2_kernel(uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, z_ptr,
                      A2f_ptr, A2b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr,
                      L, D, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl, s_zb, s_zl,
                      out_ptr,
                      N: tl.constexpr, BLOCK_D: tl.constexpr, NCH: tl.constexpr, CH: tl.constexpr,
                      PAIRS: tl.constexpr, FAST: tl.constexpr, ALIGN: tl.constexpr, PREFETCH: tl.constexpr,
                      EVEN_D: tl.constexpr):
    """Grid (B, cdiv(D, BLOCK_D)); BLOCK_D = 32 x num_warps; M = NCH x CH states per half (`tile_n`).
    A2*: (2, D, M) fp32 from `fold_A` (A * log2 e split into the lo/hi halves). out is contiguous (B, L, D)."""
    M: tl.constexpr = NCH * CH
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    if EVEN_D:  # D % BLOCK_D == 0: a constant-true mask, which Triton folds away
        md = tl.full([BLOCK_D], True, tl.int1)
    else:
        md = offs_d < D
    d3 = offs_d[None, :, None]
    # j = k * CH + c indexes the [NCH, BLOCK_D, CH] tiles; 0 * d3 broadcasts it along D
    jidx = tl.arange(0, NCH)[:, None, None] * CH + tl.arange(0, CH)[None, None, :] + 0 * d3
    m3 = (d3 < D) & (jidx < M)
    a_off = d3 * M + jidx
    A_lo_f = tl.load(_vec_ptr(A2f_ptr, a_off, CH, True), mask=m3, other=0.0)
    A_hi_f = tl.load(_vec_ptr(A2f_ptr, D * M + a_off, CH, True), mask=m3, other=0.0)
    A_lo_b = tl.load(_vec_ptr(A2b_ptr, a_off, CH, True), mask=m3, other=0.0)
    A_hi_b = tl.load(_vec_ptr(A2b_ptr, D * M + a_off, CH, True), mask=m3, other=0.0)
    Df = tl.load(D_f_ptr + offs_d, mask=md, other=0.0)
    Db = tl.load(D_b_ptr + offs_d, mask=md, other=0.0)
    bf = tl.load(bias_f_ptr + offs_d, mask=md, other=0.0)
    bb = tl.load(bias_b_ptr + offs_d, mask=md, other=0.0)

    uf_ptr += pid_b * s_ub
    ub_ptr += pid_b * s_ub
    dtf_ptr += pid_b * s_dtb
    dtb_ptr += pid_b * s_dtb
    Bf_ptr += pid_b * s_bcb
    Cf_ptr += pid_b * s_bcb
    Bb_ptr += pid_b * s_bcb
    Cb_ptr += pid_b * s_bcb
    z_ptr += pid_b * s_zb
    out_ptr += pid_b * L * D
    ot = out_ptr.dtype.element_ty

    sf_lo = tl.zeros([NCH, BLOCK_D, CH], dtype=tl.float32)
    sf_hi = tl.zeros([NCH, BLOCK_D, CH], dtype=tl.float32)
    sb_lo = tl.zeros([NCH, BLOCK_D, CH], dtype=tl.float32)
    sb_hi = tl.zeros([NCH, BLOCK_D, CH], dtype=tl.float32)
    half = L // 2
    # Software prefetch: step i computes on the token loaded during step i - 1 and loads step i + 1's
    # (clamped inside [0, L): the last prefetch re-reads a valid token and is never used).
    uf, xf, bf0, bf1, cf0, cf1 = _load_tok(0, uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, s_ul, s_dtl, s_bcl, offs_d, md,
                                           jidx, N, M, CH, PAIRS, ALIGN)
    ub, xb, bb0, bb1, cb0, cb1 = _load_tok(L - 1, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, s_ul, s_dtl, s_bcl, offs_d,
                                           md, jidx, N, M, CH, PAIRS, ALIGN)
    for i in range(0, half):
        t_f = i
        t_b = L - 1 - i
        # PREFETCH: load step i + 1 now; otherwise load step i here (the values carried in are unused)
        pf = tl.minimum(i + 1, L - 1) if PREFETCH else t_f
        pb = tl.maximum(L - 2 - i, 0) if PREFETCH else t_b
        nuf, nxf, nbf0, nbf1, ncf0, ncf1 = _load_tok(pf, uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr,
                                                     s_ul, s_dtl, s_bcl, offs_d, md, jidx, N, M, CH, PAIRS, ALIGN)
        nub, nxb, nbb0, nbb1, ncb0, ncb1 = _load_tok(pb, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr,
                                                     s_ul, s_dtl, s_bcl, offs_d, md, jidx, N, M, CH, PAIRS, ALIGN)
        if not PREFETCH:
            uf, xf, bf0, bf1, cf0, cf1 = nuf, nxf, nbf0, nbf1, ncf0, ncf1
            ub, xb, bb0, bb1, cb0, cb1 = nub, nxb, nbb0, nbb1, ncb0, ncb1
        sf_lo, sf_hi, y_f = _advance(sf_lo, sf_hi, uf, xf, bf0, bf1, cf0, cf1, md, A_lo_f, A_hi_f, Df, bf,
                                     PAIRS, FAST)
        sb_lo, sb_hi, y_b = _advance(sb_lo, sb_hi, ub, xb, bb0, bb1, cb0, cb1, md, A_lo_b, A_hi_b, Db, bb,
                                     PAIRS, FAST)
        tl.store(out_ptr + t_f * D + offs_d, y_f.to(ot), mask=md)
        tl.store(out_ptr + t_b * D + offs_d, y_b.to(ot), mask=md)
        uf, xf, bf0, bf1, cf0, cf1 = nuf, nxf, nbf0, nbf1, ncf0, ncf1
        ub, xb, bb0, bb1, cb0, cb1 = nub, nxb, nbb0, nbb1, ncb0, ncb1
    # Each lane reads back only what it stored itself; the barrier is outside the loops and keeps that
    # true whatever layout the stores got.
    tl.debug_barrier()
    for i in range(half, L):
        t_f = i
        t_b = L - 1 - i
        # PREFETCH: load step i + 1 now; otherwise load step i here (the values carried in are unused)
        pf = tl.minimum(i + 1, L - 1) if PREFETCH else t_f
        pb = tl.maximum(L - 2 - i, 0) if PREFETCH else t_b
        nuf, nxf, nbf0, nbf1, ncf0, ncf1 = _load_tok(pf, uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr,
                                                     s_ul, s_dtl, s_bcl, offs_d, md, jidx, N, M, CH, PAIRS, ALIGN)
        nub, nxb, nbb0, nbb1, ncb0, ncb1 = _load_tok(pb, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr,
                                                     s_ul, s_dtl, s_bcl, offs_d, md, jidx, N, M, CH, PAIRS, ALIGN)
        if not PREFETCH:
            uf, xf, bf0, bf1, cf0, cf1 = nuf, nxf, nbf0, nbf1, ncf0, ncf1
            ub, xb, bb0, bb1, cb0, cb1 = nub, nxb, nbb0, nbb1, ncb0, ncb1
        sf_lo, sf_hi, y_f = _advance(sf_lo, sf_hi, uf, xf, bf0, bf1, cf0, cf1, md, A_lo_f, A_hi_f, Df, bf,
                                     PAIRS, FAST)
        sb_lo, sb_hi, y_b = _advance(sb_lo, sb_hi, ub, xb, bb0, bb1, cb0, cb1, md, A_lo_b, A_hi_b, Db, bb,
                                     PAIRS, FAST)
        uf, xf, bf0, bf1, cf0, cf1 = nuf, nxf, nbf0, nbf1, ncf0, ncf1
        ub, xb, bb0, bb1, cb0, cb1 = nub, nxb, nbb0, nbb1, ncb0, ncb1
        y_f = y_f.to(ot).to(tl.float32)
        y_b = y_b.to(ot).to(tl.float32)
        mid = t_f == t_b  # odd L: both directions meet at the middle token in the same step
        part_b = tl.load(out_ptr + t_f * D + offs_d, mask=md & (t_f != t_b), other=0.0).to(tl.float32)
        part_f = tl.load(out_ptr + t_b * D + offs_d, mask=md & (t_f != t_b), other=0.0).to(tl.float32)
        part_b = tl.where(mid, y_b, part_b)
        z_f = tl.load(z_ptr + t_f * s_zl + offs_d, mask=md, other=0.0).to(tl.float32)
        z_b = tl.load(z_ptr + t_b * s_zl + offs_d, mask=md, other=0.0).to(tl.float32)
        g_f = z_f * _rcp(1.0 + _ex2(-z_f * _LOG2E, FAST), FAST)
        g_b = z_b * _rcp(1.0 + _ex2(-z_b * _LOG2E, FAST), FAST)
        tl.store(out_ptr + t_f * D + offs_d, ((y_f + part_b) * g_f).to(ot), mask=md)
        tl.store(out_ptr + t_b * D + offs_d, ((part_f + y_b) * g_b).to(ot), mask=md & (t_f != t_b))


# ----------------------------------------------------------------------------------------------------
# Python entry point

NUM_WARPS = 1


def tile_n(n: int) -> tuple[int, int]:
    """(NCH, CH): each half (lo, hi) of the N states is a [NCH, BLOCK_D, CH] tile, M = NCH x CH =
    max(next_pow2(N) / 2, 1) states, CH = min(M, 4). 4 fp32 is one 16-byte vector of A2: Triton's
    coalescing gives the tiles the layout of the widest load, and a CH wider than that load's vector would
    put 2+ lanes on one channel."""
    m = max(triton.next_power_of_2(max(n, 1)) // 2, 1)
    ch = min(m, 4)
    return m // ch, ch


def state_index(n: int, pairs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The state n held at position j of the lo and hi halves (j = k * CH + c). pairs (bf16 read as
    int32 words): lo = 2j, hi = 2j + 1. Otherwise lo = k * 2CH + c, hi = lo + CH (two CH-vectors per k)."""
    nch, ch = tile_n(n)
    j = torch.arange(nch * ch)
    if pairs:
        return 2 * j, 2 * j + 1
    lo = (j // ch) * 2 * ch + j % ch
    return lo, lo + ch


def fold_A(A: torch.Tensor, pairs: bool) -> torch.Tensor:
    """(D, N) negated A -> (2, D, M) float32 A * log2(e), split into the kernel's lo / hi state halves
    (`state_index`; positions past N are 0)."""
    d, n = A.shape
    lo, hi = state_index(n, pairs)
    a = torch.zeros(d, 2 * len(lo), dtype=torch.float32, device=A.device)
    a[:, :n] = A.to(torch.float32) * LOG2E
    return torch.stack([a[:, lo.to(A.device)], a[:, hi.to(A.device)]]).contiguous()


def use_pairs(ts: list[torch.Tensor]) -> bool:
    """bf16 B/C with even N and every row on a 4-byte boundary: read as int32 words of two states."""
    return all(t.dtype == torch.bfloat16 and t.shape[-1] % 2 == 0 and t.data_ptr() % 4 == 0
               and t.stride(0) % 2 == 0 and t.stride(1) % 2 == 0 for t in ts)


def aligned(ts: list[torch.Tensor], ch: int, pairs: bool = False) -> bool:
    """Every row of every B/C tensor starts on a vector boundary (CH values, or CH int32 words of two bf16
    in pairs mode), so the kernel's loads vectorize."""
    vec = 2 * ch if pairs else ch
    return all(t.data_ptr() % (vec * t.element_size()) == 0 and t.stride(0) % vec == 0
               and t.stride(1) % vec == 0 for t in ts)


def bidirectional_scan_triton_v2(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b,
                                 delta_bias_f, delta_bias_b, *, num_warps: int = NUM_WARPS,
                                 prefetch: bool = True) -> torch.Tensor:
    """Same arguments and result as `bidirectional_scan_ref` (prototype; one launch, sequential walk).
    prefetch: issue each step's loads one step ahead (costs ~14 SASS instructions per step; hides load
    latency at the ~1 warp per scheduler MUSE's B=16 grid gives; to be chosen on a GPU)."""
    ((bsz, length, d, n), u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, D_f, D_b, bias_f, bias_b) = \
        prepare_inputs(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b, delta_bias_f,
                       delta_bias_b)
    dev, seq, bc = u_f.device, (bsz, length, d), [B_f, C_f, B_b, C_b]
    pairs = use_pairs(bc)
    A2f, A2b = fold_A(A_f.to(dev), pairs), fold_A(A_b.to(dev), pairs)
    out = torch.empty(seq, dtype=u_f.dtype, device=dev)
    if out.numel() == 0:
        return out
    block_d = 32 * num_warps
    nch, ch = tile_n(n)
    grid = (bsz, triton.cdiv(d, block_d))
    _biscan_v2_kernel[grid](u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z,
                            A2f, A2b, D_f, D_b, bias_f, bias_b,
                            length, d, u_f.stride(0), u_f.stride(1), delta_f.stride(0), delta_f.stride(1),
                            B_f.stride(0), B_f.stride(1), z.stride(0), z.stride(1),
                            out, N=n, BLOCK_D=block_d, NCH=nch, CH=ch, PAIRS=pairs,
                            FAST=not triton_interpreting(), ALIGN=aligned(bc, ch, pairs), PREFETCH=prefetch,
                            EVEN_D=d % block_d == 0, num_warps=num_warps)
    return out


# ----------------------------------------------------------------------------------------------------
# AOT spec (the SASS report compiles it; see docs/kernels.md "Static report")

_SEQ_INPUTS = ["uf_ptr", "dtf_ptr", "Bf_ptr", "Cf_ptr", "ub_ptr", "dtb_ptr", "Bb_ptr", "Cb_ptr", "z_ptr"]
_PARAMS = ["A2f_ptr", "A2b_ptr", "D_f_ptr", "D_b_ptr", "bias_f_ptr", "bias_b_ptr"]


def scan_v2_aot_spec(dtype: str = "bf16", d_state: int = 16, num_warps: int = NUM_WARPS,
                     pairs: bool | None = None, prefetch: bool = True, even_d: bool = True,
                     bc_dtype: str | None = None) -> dict:
    """ASTSource inputs for the v2 kernel; A2f/A2b are the (2, D, M) fp32 `fold_A(A, pairs)`. ALIGN=True:
    the caller guarantees vector-aligned B/C rows (MUSE's x_proj slices are). pairs: default bf16 B/C and
    even N. even_d: the kernel assumes D % BLOCK_D == 0 (MUSE's D = 512) and drops the channel masks.
    bc_dtype: the B/C dtype when it differs from the activations' (fp32 B/C from x_proj's fp32 accumulator
    need no conversion in the loop; the wrapper accepts that mix too)."""
    bc_dtype = bc_dtype or dtype
    if pairs is None:
        pairs = bc_dtype == "bf16" and d_state % 2 == 0
    signature = {k: f"*{bc_dtype if k[0] in 'BC' else dtype}" for k in _SEQ_INPUTS}
    signature.update({k: "*fp32" for k in _PARAMS})
    signature.update({k: "i32" for k in ["L", "D", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl",
                                         "s_zb", "s_zl"]})
    signature["out_ptr"] = f"*{dtype}"
    nch, ch = tile_n(d_state)
    cx = {"N": d_state, "BLOCK_D": 32 * num_warps, "NCH": nch, "CH": ch, "PAIRS": pairs, "FAST": True,
          "ALIGN": True, "PREFETCH": prefetch,
          "EVEN_D": even_d}
    signature.update({k: "constexpr" for k in cx})
    return {"fn": _biscan_v2_kernel, "signature": signature, "constexprs": cx, "grid": "(B, cdiv(D, BLOCK_D))",
            "options": {"num_warps": num_warps}}


AOT_SPECS = {"bidirectional_scan_v2": scan_v2_aot_spec}


def sass_model(shape: dict) -> dict:
    """The static report's time model of `scan_v2_aot_spec()` (bf16, num_warps=1) at shape {B, L, D, N}:
    the two walk loops, the grid's warps, and the HBM bytes (u, dt of both directions and z read once, out
    written twice and read once; B, C of both directions)."""
    b, length, d, n = shape["B"], shape["L"], shape["D"], shape["N"]
    es = 32 * NUM_WARPS * n * 2
    return {"time_loops": [("walk_first_half", es, length // 2), ("walk_second_half", es, length - length // 2)],
            "warps": b * triton.cdiv(d, 32 * NUM_WARPS) * NUM_WARPS,
            "hbm_bytes": (5 + 3) * b * length * d * 2 + 4 * b * length * n * 2}


SASS_MODELS = {"bidirectional_scan_v2": sass_model}
