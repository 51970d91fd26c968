"""Triton fused bidirectional selective scan ("Vim v2" Mamba), forward only, (B, L, D) layout.

Computes exactly what `bidirectional_scan_ref` computes, in one launch for both directions:
  dt_t = softplus(delta_t + delta_bias)         (mamba-ssm threshold: identity above 20)
  s_t  = exp(dt_t * A) * s_prev + (dt_t * u_t) B_t          fp32 state, N values per channel
  y_t  = s_t . C_t + D * u_t
  out  = silu(z) * (y_f + y_b)                   gate applied once to the sum
The forward direction walks t = 0..L-1 and the backward one t = L-1..0 BY INDEX: no flipped copies.

Design (docs/kernels.md, "Selective scan"; the static report there shows what each choice costs):
- One lane owns one channel of one direction and keeps all N of its states in registers. The state is a
  [NCH, BLOCK_D, CH] fp32 tile (NCH x CH = next_pow2(N), CH = 4, BLOCK_D = 32 x num_warps): the 16-byte
  vector loads along CH make Triton's coalescing give it sizePerThread [1, 1, 4], threadsPerWarp
  [1, 32, 1], so per-channel work (u, dt, softplus, D skip, gate, stores) happens once per lane, and
  y = sum_n s_n C_n is a register-only reduction: no shuffles and no barriers in the loops. B_t and C_t
  are broadcast loads (every lane reads the same N values: one transaction per warp).
- One program runs BOTH directions interleaved: step i advances the forward state at t = i and the
  backward one at t = L-1-i. Two independent recurrences per step, and L steps instead of 2L.
- exp2 with log2(e) folded into A once per program (A2 = A log2 e), as `ex2.approx.ftz.f32`: one MUFU
  per (element, state), no denormal fix-ups. Softplus once per channel-step: ln2 lg2(1 + ex2(x log2 e)).
- Every step's loads are issued one step ahead (register double buffer), and the pointers advance by a
  stride per step instead of being recomputed from t. The walk is split so that no load needs a clamp
  or a mask on t: first half, the middle token of an odd length, second half, last step (no prefetch).
- Combining without scratch memory: in the first half each direction stores its y (rounded to the
  output dtype, as the reference rounds each direction before the sum) into its final slot of `out`. In
  the second half every slot it reaches was written by the other direction, in the same lane, so it
  reads that back, adds its own y, applies silu(z) and writes the result. The middle token of an odd
  length is combined in registers. Per element: u, dt of both directions and z read once; out written
  twice and read once.
- B/C: the wrapper hands the kernel float32 B/C (x_proj's 16-bit B/C converted once, a (B, L, N) pass):
  converting 16-bit B/C in the loop would cost every lane 2 instructions per (element, state) for values
  that are the same in every lane. The kernel also accepts 16-bit B/C (the TensorRT plugin passes them).
- Time-chunked variant (two launches, both directions in each) for grids too small to fill the GPU:
  launch 1 runs every chunk from a zero state and records its end state and its total dt per channel
  (the decay over a chunk is exp(A * sum dt)); launch 2 folds the carries of the preceding (forward) or
  following (backward) chunks, then reruns its chunk from the carried states with the same walk and
  combine, confined to the chunk. 2x the exp work of the sequential kernel; `choose_variant` decides.

Under the interpreter (no inline PTX) FAST=False uses tl.exp2 / tl.log2 / division in the same formulas.
AOT (TensorRT, docs/kernels.md "AOT"): every kernel takes input pointers, then int32 scalars, then
output pointers; floats are constexprs; no global scratch. The chunked variant's workspace is an explicit
tensor passed by the caller (output of launch 1, input of launch 2). `AOT_SPECS` describes each kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import triton_interpreting
from .reference import SOFTPLUS_THRESHOLD as _THRESHOLD

SOFTPLUS_THRESHOLD = tl.constexpr(_THRESHOLD)  # a constexpr so the kernels can read it
_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _ex2(x, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def _lg2(x, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def _silu(z, FAST: tl.constexpr):
    z = z.to(tl.float32)
    e = _ex2(-z * _LOG2E, FAST)
    if FAST:
        return z * tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [1.0 + e],
                                             dtype=tl.float32, is_pure=True, pack=1)
    else:
        return z / (1.0 + e)


@triton.jit
def _state_ptrs(base, jidx, CH: tl.constexpr, ALIGN: tl.constexpr):
    """Per-lane base ([BLOCK]) + jidx, a [NCH, BLOCK, CH] tile; ALIGN: the caller checked that every CH contiguous values
    start on a CH-element boundary, so each is one vector load. (The hints must be set on a value defined
    here: on a function argument they are silently dropped.)"""
    p = base[None, :, None] + jidx
    if ALIGN:
        p = tl.max_contiguous(tl.multiple_of(p, [1, 1, CH * p.dtype.element_ty.primitive_bitwidth // 8]),
                              [1, 1, CH])
    return p


@triton.jit
def _fetch(pu, pdt, pB, pC, jidx, md, N: tl.constexpr, CH: tl.constexpr, ALIGN: tl.constexpr,
           EVEN_N: tl.constexpr, LOAD_C: tl.constexpr, PACKED: tl.constexpr):
    """Each lane's inputs for its current token, raw: u, dt ([BLOCK]) and B_t, C_t ([NCH, BLOCK, CH], the
    same row for every lane of a direction: a broadcast load; states past N read as 0). LOAD_C False: c is b.
    PACKED: C_t follows B_t in the same row (pC unused): one address stream, C at constant offsets."""
    u = tl.load(pu, mask=md, other=0.0)
    x = tl.load(pdt, mask=md, other=0.0)
    b = _state_row(pB, jidx, N, CH, ALIGN, EVEN_N)
    c = b
    if LOAD_C:
        if PACKED:
            pC = pB + N
        c = _state_row(pC, jidx, N, CH, ALIGN, EVEN_N)
    return u, x, b, c


@triton.jit
def _state_row(p, jidx, N: tl.constexpr, CH: tl.constexpr, ALIGN: tl.constexpr, EVEN_N: tl.constexpr):
    """N values at each lane's p as a [NCH, BLOCK, CH] tile, 0 past N (no mask when N fills the tile)."""
    if EVEN_N:
        return tl.load(_state_ptrs(p, jidx, CH, ALIGN))
    else:
        return tl.load(_state_ptrs(p, jidx, CH, ALIGN), mask=jidx < N, other=0.0)


@triton.jit
def _advance(s, u, x, b, c, A2, Dv, bias, FAST: tl.constexpr):
    """Advance each lane's state by its token (`_fetch`'s values); returns (s, y, dt), fp32.
    A masked-off channel reads u = 0, so its state stays 0 whatever its dt."""
    u = u.to(tl.float32)
    x = x.to(tl.float32) + bias
    dt = tl.where(x > SOFTPLUS_THRESHOLD, x, _LN2 * _lg2(1.0 + _ex2(x * _LOG2E, FAST), FAST))
    s = _ex2(dt[None, :, None] * A2, FAST) * s + b.to(tl.float32) * (dt * u)[None, :, None]
    y = tl.sum(tl.sum(s * c.to(tl.float32), axis=2), axis=0) + Dv * u
    return s, y, dt



@triton.jit
def _step(s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv, bias,
          N: tl.constexpr, CH: tl.constexpr, ALIGN: tl.constexpr, EVEN_N: tl.constexpr, FAST: tl.constexpr,
          COMBINE: tl.constexpr, PREFETCH: tl.constexpr, PACKED: tl.constexpr):
    """One step of every lane: load the next token (PREFETCH; the caller guarantees it is in range),
    advance by the current one (cu, cx, cb, cc), write the slot, move the pointers on. First half
    (COMBINE False): store the rounded y. Second half: the slot holds the other direction's rounded y
    from the first half; add, gate with silu(z), store. Returns the state, the next token's values and
    the moved pointers."""
    ot = po.dtype.element_ty
    if PREFETCH:
        pu += st_u
        pdt += st_dt
        pB += st_bc
        if not PACKED:
            pC += st_bc
        cu_n, cx_n, cb_n, cc_n = _fetch(pu, pdt, pB, pC, jidx, md, N, CH, ALIGN, EVEN_N, True, PACKED)
    else:
        cu_n, cx_n, cb_n, cc_n = cu, cx, cb, cc
    s, y, _ = _advance(s, cu, cx, cb, cc, A2, Dv, bias, FAST)
    if COMBINE:
        _combine(po, pz, y, md, FAST)
        pz += st_z
    else:
        tl.store(po, y.to(ot), mask=md)
    return s, cu_n, cx_n, cb_n, cc_n, pu, pdt, pB, pC, po + st_o, pz


@triton.jit
def _combine(po, pz, y, md, FAST: tl.constexpr):
    """Second half of the walk: the slot at po holds the other direction's rounded y; add this lane's
    rounded y, gate with silu(z) and store the result."""
    ot = po.dtype.element_ty
    part = tl.load(po, mask=md, other=0.0).to(tl.float32)
    o = (y.to(ot).to(tl.float32) + part) * _silu(tl.load(pz, mask=md, other=0.0), FAST)
    tl.store(po, o.to(ot), mask=md)


@triton.jit
def _walk_and_combine(s, n, pu, pdt, pB, pC, pz, po, st_u, st_dt, st_bc, st_z, st_o, is_f, md, jidx,
                      A2, Dv, bias, N: tl.constexpr, CH: tl.constexpr, ALIGN: tl.constexpr,
                      EVEN_N: tl.constexpr, FAST: tl.constexpr, PACKED: tl.constexpr):
    """Walk a range of n tokens from the states s and write out. Lanes with is_f walk forward from the
    range's first token, the others backward from its last: every pointer is at the lane's first token
    and every st_* is the lane's signed step (elements). Every load reads a token inside the range.

    The loops run two steps per trip, so the prefetch double buffer alternates between two register
    sets instead of being copied back every step; odd step counts get one extra step outside the loop."""
    half = n // 2
    ot = po.dtype.element_ty
    cu, cx, cb, cc = _fetch(pu, pdt, pB, pC, jidx, md, N, CH, ALIGN, EVEN_N, True, PACKED)
    # First half, steps i < n // 2: the prefetched token (step i + 1) is in range.
    for i in range(0, half // 2):
        s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz = _step(
            s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
            bias, N, CH, ALIGN, EVEN_N, FAST, False, True, PACKED)
        s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz = _step(
            s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
            bias, N, CH, ALIGN, EVEN_N, FAST, False, True, PACKED)
    if half % 2 == 1:
        s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz = _step(
            s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
            bias, N, CH, ALIGN, EVEN_N, FAST, False, True, PACKED)
    # The second half reads what the other direction's lanes stored in the first.
    tl.debug_barrier()
    pz += half * st_z
    lo2 = half
    if n % 2 == 1:
        # The middle token, reached by both directions in the same step: the forward lanes leave their y
        # in the slot, the backward lanes combine. Prefetch step half + 1 (none when n == 1: re-read).
        d1 = tl.minimum(n - 1, 1)
        pu += d1 * st_u
        pdt += d1 * st_dt
        pB += d1 * st_bc
        pC += d1 * st_bc
        nu, nx, nb, nc = _fetch(pu, pdt, pB, pC, jidx, md, N, CH, ALIGN, EVEN_N, True, PACKED)
        s, y, _ = _advance(s, cu, cx, cb, cc, A2, Dv, bias, FAST)
        tl.store(po, y.to(ot), mask=md & is_f)
        tl.debug_barrier()
        _combine(po, pz, y, md & ~is_f, FAST)
        po += st_o
        pz += st_z
        cu, cx, cb, cc = nu, nx, nb, nc
        lo2 = half + 1
    # Second half up to the last step; the prefetched token is in range.
    rest = n - 1 - lo2
    for i in range(0, rest // 2):
        s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz = _step(
            s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
            bias, N, CH, ALIGN, EVEN_N, FAST, True, True, PACKED)
        s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz = _step(
            s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
            bias, N, CH, ALIGN, EVEN_N, FAST, True, True, PACKED)
    if rest % 2 == 1:
        s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz = _step(
            s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
            bias, N, CH, ALIGN, EVEN_N, FAST, True, True, PACKED)
    if n > 1:  # the last step: nothing left to prefetch
        _step(s, cu, cx, cb, cc, pu, pdt, pB, pC, po, pz, st_u, st_dt, st_bc, st_o, st_z, jidx, md, A2, Dv,
              bias, N, CH, ALIGN, EVEN_N, FAST, True, False, PACKED)


@triton.jit
def _lanes(D, BLOCK_D: tl.constexpr, NCH: tl.constexpr, CH: tl.constexpr, EVEN_D: tl.constexpr):
    """The program's 2 x BLOCK_D lanes: the first BLOCK_D run the forward direction over channels
    pid_d * BLOCK_D + [0, BLOCK_D), the others the backward direction over the same channels. Returns
    (is_f, ch, md, jidx); jidx ([NCH, 2 BLOCK_D, CH], j = k * CH + c) indexes a lane's states."""
    lane = tl.arange(0, 2 * BLOCK_D)
    is_f = lane < BLOCK_D
    ch = tl.program_id(1) * BLOCK_D + lane % BLOCK_D
    if EVEN_D:  # D % BLOCK_D == 0: a constant-true mask, which Triton folds away
        md = tl.full([2 * BLOCK_D], True, tl.int1)
    else:
        md = ch < D
    jidx = tl.arange(0, NCH)[:, None, None] * CH + tl.arange(0, CH)[None, None, :] + 0 * ch[None, :, None]
    return is_f, ch, md, jidx


@triton.jit
def _lane_params(A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr, is_f, ch, md, jidx,
                 N: tl.constexpr, CH: tl.constexpr, EVEN_N: tl.constexpr):
    """Each lane's direction's parameters: A2 = A log2(e) ([NCH, BLOCK, CH], 0 past N), D, dt bias."""
    a = tl.where(is_f, A_f_ptr + ch * N, A_b_ptr + ch * N)
    m3 = md[None, :, None] & (jidx < N)
    A2 = tl.load(_state_ptrs(a, jidx, CH, EVEN_N), mask=m3, other=0.0) * _LOG2E
    Dv = tl.load(tl.where(is_f, D_f_ptr, D_b_ptr) + ch, mask=md, other=0.0)
    bias = tl.load(tl.where(is_f, bias_f_ptr, bias_b_ptr) + ch, mask=md, other=0.0)
    return A2, Dv, bias


@triton.jit
def _lane_seq_ptrs(f_ptr, b_ptr, lo, n, stride, is_f, ch):
    """Per-lane pointer at the lane's first token of the range [lo, lo + n) of a (rows, stride) tensor
    pair (forward: row lo of f, backward: row lo + n - 1 of b), column ch, and the lane's signed step."""
    p = tl.where(is_f, f_ptr + lo * stride, b_ptr + (lo + n - 1) * stride) + ch
    return p, tl.where(is_f, stride, -stride)


@triton.jit
def _walk_range(uf, dtf, Bf, Cf, ub, dtb, Bb, Cb, z, out, A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr,
                bias_f_ptr, bias_b_ptr, hend_ptr, dtsum_ptr, hrow, n_chunks, pid_c,
                lo, n, D, s_ul, s_dtl, s_bcl, s_zl,
                N: tl.constexpr, BLOCK_D: tl.constexpr, NCH: tl.constexpr, CH: tl.constexpr,
                FAST: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr, EVEN_N: tl.constexpr,
                CARRY: tl.constexpr, PACKED: tl.constexpr):
    """Tokens [lo, lo + n) of one batch row (pointers already at the row), both directions, from zero
    states or (CARRY) from the states folded from launch 1's workspace rows hrow + 2 c (+1 backward)."""
    is_f, ch, md, jidx = _lanes(D, BLOCK_D, NCH, CH, EVEN_D)
    A2, Dv, bias = _lane_params(A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr, is_f, ch, md,
                                jidx, N, CH, EVEN_N)
    s = tl.zeros([NCH, 2 * BLOCK_D, CH], dtype=tl.float32)
    if CARRY:
        # Forward lanes fold the chunks before this one in order, backward lanes the chunks after it in
        # reverse order: s = exp(A sum_dt) s + h_end. A lane with nothing left to fold reads 0 (identity).
        n_f = pid_c
        n_b = n_chunks - 1 - pid_c
        m3 = md[None, :, None] & (jidx < N)
        dn = ch[None, :, None] * N + jidx
        for j in range(0, tl.maximum(n_f, n_b)):
            live = tl.where(is_f, j < n_f, j < n_b)
            row = hrow + tl.where(is_f, 2 * j, 2 * (n_chunks - 1 - j) + 1)
            sdt = tl.load(dtsum_ptr + row * D + ch, mask=md & live, other=0.0)
            h = tl.load(hend_ptr + (row * D * N)[None, :, None] + dn, mask=m3 & live[None, :, None], other=0.0)
            s = _ex2(sdt[None, :, None] * A2, FAST) * s + h
    pu, st_u = _lane_seq_ptrs(uf, ub, lo, n, s_ul, is_f, ch)
    pdt, st_dt = _lane_seq_ptrs(dtf, dtb, lo, n, s_dtl, is_f, ch)
    pB, st_bc = _lane_seq_ptrs(Bf, Bb, lo, n, s_bcl, is_f, 0 * ch)
    pC, _ = _lane_seq_ptrs(Cf, Cb, lo, n, s_bcl, is_f, 0 * ch)
    pz, st_z = _lane_seq_ptrs(z, z, lo, n, s_zl, is_f, ch)
    po, st_o = _lane_seq_ptrs(out, out, lo, n, D, is_f, ch)
    _walk_and_combine(s, n, pu, pdt, pB, pC, pz, po, st_u, st_dt, st_bc, st_z, st_o, is_f, md, jidx,
                      A2, Dv, bias, N, CH, ALIGN, EVEN_N, FAST, PACKED)


@triton.jit
def _biscan_seq_kernel(uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, z_ptr,
                       A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr,
                       L, D, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl, s_zb, s_zl,
                       out_ptr,
                       N: tl.constexpr, BLOCK_D: tl.constexpr, NCH: tl.constexpr, CH: tl.constexpr,
                       FAST: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr, EVEN_N: tl.constexpr,
                       PACKED: tl.constexpr):
    """Grid (B, cdiv(D, BLOCK_D)), 2 x BLOCK_D / 32 warps per program. out is contiguous (B, L, D)."""
    pid_b = tl.program_id(0).to(tl.int64)
    _walk_range(uf_ptr + pid_b * s_ub, dtf_ptr + pid_b * s_dtb, Bf_ptr + pid_b * s_bcb, Cf_ptr + pid_b * s_bcb,
                ub_ptr + pid_b * s_ub, dtb_ptr + pid_b * s_dtb, Bb_ptr + pid_b * s_bcb, Cb_ptr + pid_b * s_bcb,
                z_ptr + pid_b * s_zb, out_ptr + pid_b * L * D, A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr,
                bias_f_ptr, bias_b_ptr, D_f_ptr, D_f_ptr, 0, 1, 0,
                0, L, D, s_ul, s_dtl, s_bcl, s_zl,
                N, BLOCK_D, NCH, CH, FAST, ALIGN, EVEN_D, EVEN_N, False, PACKED)


@triton.jit
def _state_step(s, dsum, cu, cx, cb, pu, pdt, pB, st_u, st_dt, st_bc, jidx, md, A2, bias, N: tl.constexpr,
                CH: tl.constexpr, ALIGN: tl.constexpr, EVEN_N: tl.constexpr, FAST: tl.constexpr,
                PREFETCH: tl.constexpr):
    """One step of launch 1: advance the state and the dt sum; prefetch the next token (in range)."""
    if PREFETCH:
        pu += st_u
        pdt += st_dt
        pB += st_bc
        nu, nx, nb, _ = _fetch(pu, pdt, pB, pB, jidx, md, N, CH, ALIGN, EVEN_N, False, False)
    else:
        nu, nx, nb = cu, cx, cb
    s, _, dt = _advance(s, cu, cx, cb, cb, A2, bias, bias, FAST)
    return s, dsum + dt, nu, nx, nb, pu, pdt, pB


@triton.jit
def _biscan_chunk_state_kernel(uf_ptr, dtf_ptr, Bf_ptr, ub_ptr, dtb_ptr, Bb_ptr,
                               A_f_ptr, A_b_ptr, bias_f_ptr, bias_b_ptr,
                               L, D, CHUNK, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl,
                               hend_ptr, dtsum_ptr,
                               N: tl.constexpr, BLOCK_D: tl.constexpr, NCH: tl.constexpr, CH: tl.constexpr,
                               FAST: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr,
                               EVEN_N: tl.constexpr, PACKED: tl.constexpr):
    """Launch 1 of the chunked variant (C is not read: PACKED is accepted and unused). Grid (B, cdiv(D, BLOCK_D), n_chunks).
    hend: (B, n_chunks, 2, D, N) fp32 chunk-end states from a zero start; dtsum: (B, n_chunks, 2, D) fp32."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(2)
    is_f, ch, md, jidx = _lanes(D, BLOCK_D, NCH, CH, EVEN_D)
    A2, _, bias = _lane_params(A_f_ptr, A_b_ptr, bias_f_ptr, bias_b_ptr, bias_f_ptr, bias_b_ptr, is_f, ch,
                               md, jidx, N, CH, EVEN_N)
    lo = pid_c * CHUNK
    n = tl.minimum(L - lo, CHUNK)
    pu, st_u = _lane_seq_ptrs(uf_ptr + pid_b * s_ub, ub_ptr + pid_b * s_ub, lo, n, s_ul, is_f, ch)
    pdt, st_dt = _lane_seq_ptrs(dtf_ptr + pid_b * s_dtb, dtb_ptr + pid_b * s_dtb, lo, n, s_dtl, is_f, ch)
    pB, st_bc = _lane_seq_ptrs(Bf_ptr + pid_b * s_bcb, Bb_ptr + pid_b * s_bcb, lo, n, s_bcl, is_f, 0 * ch)
    s = tl.zeros([NCH, 2 * BLOCK_D, CH], dtype=tl.float32)
    dsum = tl.zeros([2 * BLOCK_D], dtype=tl.float32)
    # y is not needed here (C is not read): the compiler drops the y math. Two steps per trip, as in
    # `_walk_and_combine`, and the last step (nothing to prefetch) after the loop.
    cu, cx, cb, _ = _fetch(pu, pdt, pB, pB, jidx, md, N, CH, ALIGN, EVEN_N, False, False)
    for i in range(0, (n - 1) // 2):
        s, dsum, cu, cx, cb, pu, pdt, pB = _state_step(s, dsum, cu, cx, cb, pu, pdt, pB, st_u, st_dt, st_bc,
                                                       jidx, md, A2, bias, N, CH, ALIGN, EVEN_N, FAST, True)
        s, dsum, cu, cx, cb, pu, pdt, pB = _state_step(s, dsum, cu, cx, cb, pu, pdt, pB, st_u, st_dt, st_bc,
                                                       jidx, md, A2, bias, N, CH, ALIGN, EVEN_N, FAST, True)
    if (n - 1) % 2 == 1:
        s, dsum, cu, cx, cb, pu, pdt, pB = _state_step(s, dsum, cu, cx, cb, pu, pdt, pB, st_u, st_dt, st_bc,
                                                       jidx, md, A2, bias, N, CH, ALIGN, EVEN_N, FAST, True)
    s, dsum, cu, cx, cb, pu, pdt, pB = _state_step(s, dsum, cu, cx, cb, pu, pdt, pB, st_u, st_dt, st_bc,
                                                   jidx, md, A2, bias, N, CH, ALIGN, EVEN_N, FAST, False)
    row = (pid_b * tl.num_programs(2) + pid_c) * 2 + tl.where(is_f, 0, 1)
    tl.store(hend_ptr + (row * D * N)[None, :, None] + ch[None, :, None] * N + jidx, s,
             mask=md[None, :, None] & (jidx < N))
    tl.store(dtsum_ptr + row * D + ch, dsum, mask=md)


@triton.jit
def _biscan_chunk_out_kernel(uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, z_ptr,
                             A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr, hend_ptr, dtsum_ptr,
                             L, D, CHUNK, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl, s_zb, s_zl,
                             out_ptr,
                             N: tl.constexpr, BLOCK_D: tl.constexpr, NCH: tl.constexpr, CH: tl.constexpr,
                             FAST: tl.constexpr, ALIGN: tl.constexpr, EVEN_D: tl.constexpr,
                             EVEN_N: tl.constexpr, PACKED: tl.constexpr):
    """Launch 2 of the chunked variant. Grid (B, cdiv(D, BLOCK_D), n_chunks)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    lo = pid_c * CHUNK
    _walk_range(uf_ptr + pid_b * s_ub, dtf_ptr + pid_b * s_dtb, Bf_ptr + pid_b * s_bcb, Cf_ptr + pid_b * s_bcb,
                ub_ptr + pid_b * s_ub, dtb_ptr + pid_b * s_dtb, Bb_ptr + pid_b * s_bcb, Cb_ptr + pid_b * s_bcb,
                z_ptr + pid_b * s_zb, out_ptr + pid_b * L * D, A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr,
                bias_f_ptr, bias_b_ptr, hend_ptr, dtsum_ptr, pid_b * n_chunks * 2, n_chunks, pid_c,
                lo, tl.minimum(L - lo, CHUNK), D, s_ul, s_dtl, s_bcl, s_zl,
                N, BLOCK_D, NCH, CH, FAST, ALIGN, EVEN_D, EVEN_N, True, PACKED)


# ----------------------------------------------------------------------------------------------------
# Launch configuration

# Chunks shorter than this spend more on the carry pass and the rerun than they win in parallelism.
MIN_CHUNK = 128
# The static model's machine (docs/kernels.md): one resident warp per scheduler issues every clock.
SCHEDULERS_PER_SM = 4
# SM count assumed when the device cannot be queried (H100 SXM and H200 both have 132).
DEFAULT_SM_COUNT = 132


def default_block_d(d: int, interpret: bool | None = None) -> int:
    """Channels per program. GPU: 16, i.e. 32 lanes (16 channels x 2 directions) = one warp per program,
    which makes MUSE's B = 16, D = 512 grid 512 warps: one per scheduler of a 132-SM GPU.
    Interpreter: programs run one after another, so fewer, wider programs are much faster."""
    interpret = triton_interpreting() if interpret is None else interpret
    if interpret:
        return min(triton.next_power_of_2(max(d, 1)), 64)
    return 16


def num_warps_for(block_d: int) -> int:
    """2 x block_d lanes (both directions) per program."""
    return max(1, 2 * block_d // 32)


def tile_n(n: int) -> tuple[int, int]:
    """(NCH, CH): a lane's states are a [NCH, ., CH] tile, NCH x CH = next_pow2(N), CH = min(that, 4).
    4 fp32 is one 16-byte vector; a CH wider than the widest load's vector would put 2 lanes on a channel."""
    npow = triton.next_power_of_2(max(n, 1))
    ch = min(npow, 4)
    return npow // ch, ch


def choose_variant(batch: int, d: int, length: int, block_d: int, sm_count: int | None = None
                   ) -> tuple[str, int]:
    """("sequential", length) or ("chunked", chunk_size).

    The static model (docs/kernels.md) has each scheduler issue for one resident warp; the sequential
    grid has batch x cdiv(d, block_d) programs of `num_warps_for(block_d)` warps, each walking L steps.
    Splitting L into c chunks gives c times the warps, each walking 2 L / c steps (two launches), so it
    pays from c = 3 on. Chunked when that many chunks of at least MIN_CHUNK tokens still fit one warp per
    scheduler, with as many chunks as fit. Modeled, not yet measured on a GPU (docs/kernels.md).
    Under the interpreter (programs run serially) the sequential kernel is always cheaper."""
    if sm_count is None:
        sm_count = DEFAULT_SM_COUNT
    warps = batch * triton.cdiv(d, block_d) * num_warps_for(block_d)
    n_chunks = min((SCHEDULERS_PER_SM * sm_count) // max(warps, 1), length // MIN_CHUNK)
    if n_chunks < 3:
        return "sequential", max(length, 1)
    return "chunked", triton.cdiv(length, n_chunks)


def _sm_count(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


# ----------------------------------------------------------------------------------------------------
# Python entry point


def _rows(name: str, t: torch.Tensor, shape: tuple, device: torch.device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {shape}, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but u_f is on {device}")
    return t if t.stride(-1) == 1 else t.contiguous()


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel takes one (batch, row) stride pair per tensor pair: make both contiguous if they differ."""
    if a.stride()[:2] != b.stride()[:2]:
        return a.contiguous(), b.contiguous()
    return a, b


def _vec(name: str, t: torch.Tensor | None, d: int, device: torch.device) -> torch.Tensor:
    if t is None:
        return torch.zeros(d, dtype=torch.float32, device=device)
    if tuple(t.shape) != (d,):
        raise ValueError(f"{name} must have shape ({d},), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but u_f is on {device}")
    return t.to(torch.float32).contiguous()


def prepare_inputs(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b, delta_bias_f,
                   delta_bias_b):
    """Validate the scan's inputs (one-line ValueErrors) and lay them out as the kernels read them:
    channel stride 1, one (batch, row) stride pair per forward/backward pair and one for B/C, B/C in
    float32 (16-bit B/C converted here, see the module docstring), A, D and dt bias as contiguous float32
    (D/bias zeros when None). Returns ((Bt, L, D, N), then the 15 inputs in the same order)."""
    if not isinstance(u_f, torch.Tensor) or u_f.dim() != 3:
        raise ValueError(f"u_f must be a (B, L, D) tensor, got {getattr(u_f, 'shape', type(u_f).__name__)}")
    bsz, length, d = u_f.shape
    dev = u_f.device
    if not isinstance(A_f, torch.Tensor) or A_f.dim() != 2 or A_f.shape[0] != d:
        raise ValueError(f"A_f must be (D={d}, N), got {getattr(A_f, 'shape', None)}")
    n = A_f.shape[1]
    if not isinstance(A_b, torch.Tensor) or tuple(A_b.shape) != (d, n):
        raise ValueError(f"A_b must be (D={d}, N={n}), got {tuple(getattr(A_b, 'shape', ()))}")
    seq, st = (bsz, length, d), (bsz, length, n)
    u_f, u_b = _pair(_rows("u_f", u_f, seq, dev), _rows("u_b", u_b, seq, dev))
    delta_f, delta_b = _pair(_rows("delta_f", delta_f, seq, dev), _rows("delta_b", delta_b, seq, dev))
    bc = [_rows(nm, t, st, dev) for nm, t in (("B_f", B_f), ("C_f", C_f), ("B_b", B_b), ("C_b", C_b))]
    if any(t.dtype != torch.float32 for t in bc) or len({t.stride()[:2] for t in bc}) != 1:
        # One float32 (Bt, L, 2N) copy per direction, C after B in each row (`packed`); x_proj's B and C
        # slices already sit that way, so they are converted as one (Bt, L, 2N) view.
        f, b = (_pair_f32(*pair) for pair in ((bc[0], bc[1]), (bc[2], bc[3])))
        bc = [f[..., :n], f[..., n:], b[..., :n], b[..., n:]]
    B_f, C_f, B_b, C_b = bc
    z = _rows("z", z, seq, dev)
    if u_b.dtype != u_f.dtype:
        raise ValueError(f"u_b dtype {u_b.dtype} must equal u_f dtype {u_f.dtype}")
    A_f, A_b = (_aligned_f32(a.to(dev)) for a in (A_f, A_b))
    return ((bsz, length, d, n), u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b,
            _vec("D_f", D_f, d, dev), _vec("D_b", D_b, d, dev),
            _vec("delta_bias_f", delta_bias_f, d, dev), _vec("delta_bias_b", delta_bias_b, d, dev))


def _pair_f32(B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Contiguous (Bt, L, 2N) float32 copy of B then C (both directions' copies then share strides)."""
    if _adjacent(B, C):
        wide = B.as_strided((*B.shape[:-1], 2 * B.shape[-1]), B.stride())
        return wide.to(torch.float32).contiguous()
    return torch.cat([B, C], dim=-1).to(torch.float32)


def _aligned_f32(a: torch.Tensor) -> torch.Tensor:
    """Contiguous float32 starting on a 16-byte boundary (A's rows are read as 16-byte vectors)."""
    a = a.to(torch.float32).contiguous()
    return a if a.data_ptr() % 16 == 0 else a.clone()


def packed(B_f: torch.Tensor, C_f: torch.Tensor, B_b: torch.Tensor, C_b: torch.Tensor) -> bool:
    """C starts N elements after B in the same rows, in both directions (x_proj's output slices, or the
    float32 copy `prepare_inputs` makes), so the kernels read B_t and C_t from one address."""
    return _adjacent(B_f, C_f) and _adjacent(B_b, C_b)


def _adjacent(B: torch.Tensor, C: torch.Tensor) -> bool:
    """C starts N elements after B, with B's dtype and strides."""
    return (C.data_ptr() == B.data_ptr() + B.shape[-1] * B.element_size() and C.stride() == B.stride()
            and C.dtype == B.dtype)


def aligned(ts: list[torch.Tensor], ch: int) -> bool:
    """Every row of every B/C tensor starts on a CH-element boundary, so each lane's CH-vectors load whole."""
    return all(t.data_ptr() % (ch * t.element_size()) == 0 and t.stride(0) % ch == 0 and t.stride(1) % ch == 0
               for t in ts)


def bidirectional_scan_triton(u_f: torch.Tensor, delta_f: torch.Tensor, B_f: torch.Tensor, C_f: torch.Tensor,
                              u_b: torch.Tensor, delta_b: torch.Tensor, B_b: torch.Tensor, C_b: torch.Tensor,
                              z: torch.Tensor, A_f: torch.Tensor, A_b: torch.Tensor, D_f: torch.Tensor | None,
                              D_b: torch.Tensor | None, delta_bias_f: torch.Tensor | None,
                              delta_bias_b: torch.Tensor | None, *, variant: str = "auto",
                              chunk_size: int | None = None, block_d: int | None = None) -> torch.Tensor:
    """Fused bidirectional selective scan; same arguments and result as `bidirectional_scan_ref`.

    u_*, delta_*, z: (Bt, L, D); B_*, C_*: (Bt, L, N); all float32/float16/bfloat16, channel stride 1
    (row-strided views such as slices of a projection output are read in place; 16-bit B/C are first
    converted to float32, a (Bt, L, N) copy each). A_f, A_b: (D, N) float32, the already negated
    A = -exp(A_log). D_*, delta_bias_*: (D,) or None (zero).
    Returns silu(z) * (y_f + y_b) as a contiguous (Bt, L, D) tensor in u_f.dtype; state math is float32.

    variant: "sequential" (one launch), "chunked" (two launches, chunk_size tokens per chunk) or "auto"
    (`choose_variant`). block_d: channels per program, a power of two (default `default_block_d`).
    """
    ((bsz, length, d, n), u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b, bias_f,
     bias_b) = prepare_inputs(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b,
                              delta_bias_f, delta_bias_b)
    dev, seq = u_f.device, (bsz, length, d)
    out = torch.empty(seq, dtype=u_f.dtype, device=dev)
    if out.numel() == 0:
        return out
    block_d = block_d or default_block_d(d)
    if block_d < 1 or block_d & (block_d - 1):
        raise ValueError(f"block_d must be a power of two, got {block_d}")
    nch, ch = tile_n(n)
    cx = {"N": n, "BLOCK_D": block_d, "NCH": nch, "CH": ch, "FAST": not triton_interpreting(),
          "ALIGN": aligned([B_f, C_f, B_b, C_b], ch), "EVEN_D": d % block_d == 0,
          "EVEN_N": n == nch * ch, "PACKED": packed(B_f, C_f, B_b, C_b), "num_warps": num_warps_for(block_d)}
    if variant == "auto":
        variant, auto_chunk = choose_variant(bsz, d, length, block_d, _sm_count(dev))
        chunk_size = chunk_size or auto_chunk
    if variant == "sequential":
        grid = (bsz, triton.cdiv(d, block_d))
        _biscan_seq_kernel[grid](u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z,
                                 A_f, A_b, D_f, D_b, bias_f, bias_b,
                                 length, d, u_f.stride(0), u_f.stride(1), delta_f.stride(0), delta_f.stride(1),
                                 B_f.stride(0), B_f.stride(1), z.stride(0), z.stride(1), out, **cx)
        return out
    if variant != "chunked":
        raise ValueError(f"variant must be 'auto', 'sequential' or 'chunked', got {variant!r}")
    if chunk_size is None or chunk_size < 1:
        raise ValueError(f"the chunked variant needs chunk_size >= 1, got {chunk_size}")
    n_chunks = triton.cdiv(length, chunk_size)
    hend = torch.empty((bsz, n_chunks, 2, d, n), dtype=torch.float32, device=dev)
    dtsum = torch.empty((bsz, n_chunks, 2, d), dtype=torch.float32, device=dev)
    grid = (bsz, triton.cdiv(d, block_d), n_chunks)
    _biscan_chunk_state_kernel[grid](u_f, delta_f, B_f, u_b, delta_b, B_b, A_f, A_b, bias_f, bias_b,
                                     length, d, chunk_size, u_f.stride(0), u_f.stride(1),
                                     delta_f.stride(0), delta_f.stride(1), B_f.stride(0), B_f.stride(1),
                                     hend, dtsum, **cx)
    _biscan_chunk_out_kernel[grid](u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z,
                                   A_f, A_b, D_f, D_b, bias_f, bias_b, hend, dtsum,
                                   length, d, chunk_size, u_f.stride(0), u_f.stride(1),
                                   delta_f.stride(0), delta_f.stride(1), B_f.stride(0), B_f.stride(1),
                                   z.stride(0), z.stride(1), out, **cx)
    return out


# ----------------------------------------------------------------------------------------------------
# Ahead-of-time compilation specs (for the AOT tests, the static report and the TensorRT plugin)

_SEQ_INPUTS = ["uf_ptr", "dtf_ptr", "Bf_ptr", "Cf_ptr", "ub_ptr", "dtb_ptr", "Bb_ptr", "Cb_ptr", "z_ptr"]
_PARAMS = ["A_f_ptr", "A_b_ptr", "D_f_ptr", "D_b_ptr", "bias_f_ptr", "bias_b_ptr"]


def _spec(fn, pointers: dict, ints: list, outputs: dict, constexprs: dict, grid: str, block_d: int) -> dict:
    signature = dict(pointers)
    signature.update({k: "i32" for k in ints})
    signature.update(outputs)
    signature.update({k: "constexpr" for k in constexprs})
    return {"fn": fn, "signature": signature, "constexprs": dict(constexprs), "grid": grid,
            "options": {"num_warps": num_warps_for(block_d)}}


def _spec_pointers(names: list[str], dtype: str, bc_dtype: str | None) -> dict:
    return {k: "*fp32" if k in _PARAMS or k in ("hend_ptr", "dtsum_ptr")
            else f"*{bc_dtype or dtype}" if k[0] in "BC" else f"*{dtype}" for k in names}


def _constexprs(d_state: int, block_d: int, even_d: bool, packed_bc: bool) -> dict:
    """ALIGN: contiguous (B, L, N) B/C with N a multiple of CH (what TensorRT passes and what the wrapper
    makes) have every row on a vector boundary. even_d: D % block_d == 0 (the static report's D = 512);
    off by default because a TensorRT plan's D is only known at run time. packed_bc: C follows B in each
    row (`packed`; the wrapper's layout, not TensorRT's separate B and C tensors)."""
    nch, ch = tile_n(d_state)
    return {"N": d_state, "BLOCK_D": block_d, "NCH": nch, "CH": ch, "FAST": True,
            "ALIGN": d_state % ch == 0, "EVEN_D": bool(even_d), "EVEN_N": d_state == nch * ch,
            "PACKED": bool(packed_bc)}


def scan_aot_spec(dtype: str = "bf16", d_state: int = 16, block_d: int = 16, bc_dtype: str | None = None,
                  even_d: bool = False, packed_bc: bool = False) -> dict:
    """ASTSource inputs for the one-launch sequential kernel. dtype: Triton name of the activation type
    ("fp32", "fp16", "bf16"); bc_dtype: B/C's (default dtype; the wrapper passes "fp32"); A, D and the dt
    biases are fp32."""
    ptrs = _spec_pointers(_SEQ_INPUTS + _PARAMS, dtype, bc_dtype)
    ints = ["L", "D", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl", "s_zb", "s_zl"]
    return _spec(_biscan_seq_kernel, ptrs, ints, {"out_ptr": f"*{dtype}"},
                 _constexprs(d_state, block_d, even_d, packed_bc), "(B, cdiv(D, BLOCK_D))", block_d)


def chunk_state_aot_spec(dtype: str = "bf16", d_state: int = 16, block_d: int = 16,
                         bc_dtype: str | None = None, even_d: bool = False,
                         packed_bc: bool = False) -> dict:
    """Launch 1 of the chunked variant; its outputs hend (B, n_chunks, 2, D, N) and dtsum
    (B, n_chunks, 2, D) are fp32 workspace tensors the caller allocates."""
    ptrs = _spec_pointers(["uf_ptr", "dtf_ptr", "Bf_ptr", "ub_ptr", "dtb_ptr", "Bb_ptr",
                           "A_f_ptr", "A_b_ptr", "bias_f_ptr", "bias_b_ptr"], dtype, bc_dtype)
    ints = ["L", "D", "CHUNK", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl"]
    return _spec(_biscan_chunk_state_kernel, ptrs, ints, {"hend_ptr": "*fp32", "dtsum_ptr": "*fp32"},
                 _constexprs(d_state, block_d, even_d, packed_bc), "(B, cdiv(D, BLOCK_D), cdiv(L, CHUNK))", block_d)


def chunk_out_aot_spec(dtype: str = "bf16", d_state: int = 16, block_d: int = 16,
                       bc_dtype: str | None = None, even_d: bool = False, packed_bc: bool = False) -> dict:
    """Launch 2 of the chunked variant (reads launch 1's workspace)."""
    ptrs = _spec_pointers(_SEQ_INPUTS + _PARAMS + ["hend_ptr", "dtsum_ptr"], dtype, bc_dtype)
    ints = ["L", "D", "CHUNK", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl", "s_zb", "s_zl"]
    return _spec(_biscan_chunk_out_kernel, ptrs, ints, {"out_ptr": f"*{dtype}"},
                 _constexprs(d_state, block_d, even_d, packed_bc), "(B, cdiv(D, BLOCK_D), cdiv(L, CHUNK))", block_d)


# name -> function(dtype="bf16", ...) returning {"fn", "signature", "constexprs", "grid", "options"}:
# triton.compile(ASTSource(fn, signature, constexprs), target=..., options=options).
AOT_SPECS = {
    "bidirectional_scan": scan_aot_spec,
    "bidirectional_scan_chunk_state": chunk_state_aot_spec,
    "bidirectional_scan_chunk_out": chunk_out_aot_spec,
}
