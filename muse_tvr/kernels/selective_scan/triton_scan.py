"""Triton fused bidirectional selective scan ("Vim v2" Mamba), forward only, (B, L, D) layout.

Computes exactly what `bidirectional_scan_ref` computes, in one launch for both directions:
  dt_t = softplus(delta_t + delta_bias)         (mamba-ssm threshold: identity above 20)
  s_t  = exp(dt_t * A) * s_prev + (dt_t * u_t) B_t          fp32 state [BLOCK_D, N] in registers
  y_t  = s_t . C_t + D * u_t
  out  = silu(z) * (y_f + y_b)                   gate applied once to the sum
The forward direction walks t = 0..L-1 and the backward one t = L-1..0 BY INDEX: no flipped copies.

Design (docs/kernels.md):
- One program owns one (batch, D-block) and runs BOTH directions interleaved in the same loop: step i
  advances the forward state at t = i and the backward state at t = L-1-i. The two recurrences are
  independent, which doubles the instruction-level parallelism of a latency-bound loop, and the program
  walks L steps instead of 2L.
- Combining without a scratch buffer: in the first half of the walk (i < L/2) each direction writes its
  own y (rounded to the output dtype, as the reference rounds each direction before summing) into its
  final slot of `out`. In the second half every position it reaches was already visited by the other
  direction, so it reads that partial back, adds its own y, applies silu(z) and writes the final value.
  A barrier between the halves makes the first half's stores visible to every thread of the program.
  Memory traffic per element: u_f, u_b, dt_f, dt_b, z read once, out written twice and read once.
- Time-chunked variant (two launches, each covering both directions) for grids too small to fill the
  GPU: launch 1 runs every chunk from a zero state and records its end state and its total dt per
  channel (the decay over a chunk is exp(A * sum dt)); launch 2 folds the carries of the preceding
  (forward) or following (backward) chunks sequentially (a few chunks, cheap), then reruns its chunk
  from the carried state with the same interleaved walk and combine as above, confined to the chunk.
  Costs 2x the exp work of the sequential kernel, so it only pays when the sequential grid leaves SMs
  idle; `choose_variant` documents the heuristic.

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


@triton.jit
def _scan_step(state, t, u_ptr, dt_ptr, B_ptr, C_ptr, s_ul, s_dtl, s_bcl,
               offs_d, md, offs_n, mn, A, Dv, bias):
    """Advance one direction's state by the token at t; return (state, y_t, dt_t), fp32.
    Masked-off channels (md False) get dt = 0, so their state stays zero."""
    u = tl.load(u_ptr + t * s_ul + offs_d, mask=md, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + t * s_dtl + offs_d, mask=md, other=0.0).to(tl.float32) + bias
    dt = tl.where(dt > SOFTPLUS_THRESHOLD, dt, tl.log(1.0 + tl.exp(dt)))
    dt = tl.where(md, dt, 0.0)
    Bt = tl.load(B_ptr + t * s_bcl + offs_n, mask=mn, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + t * s_bcl + offs_n, mask=mn, other=0.0).to(tl.float32)
    state = tl.exp(dt[:, None] * A) * state + (dt * u)[:, None] * Bt[None, :]
    y = tl.sum(state * Ct[None, :], axis=1) + Dv * u
    return state, y, dt


@triton.jit
def _walk_and_combine(state_f, state_b, lo, n,
                      uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, z_ptr, out_ptr,
                      s_ul, s_dtl, s_bcl, s_zl, s_ol,
                      offs_d, md, offs_n, mn, A_f, A_b, D_f, D_b, bias_f, bias_b):
    """Both directions over positions [lo, lo + n), starting from the given states; writes out."""
    half = n // 2
    for i in range(0, half):
        t_f = lo + i
        t_b = lo + n - 1 - i
        state_f, y_f, _ = _scan_step(state_f, t_f, uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, s_ul, s_dtl, s_bcl,
                                  offs_d, md, offs_n, mn, A_f, D_f, bias_f)
        state_b, y_b, _ = _scan_step(state_b, t_b, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, s_ul, s_dtl, s_bcl,
                                  offs_d, md, offs_n, mn, A_b, D_b, bias_b)
        tl.store(out_ptr + t_f * s_ol + offs_d, y_f.to(out_ptr.dtype.element_ty), mask=md)
        tl.store(out_ptr + t_b * s_ol + offs_d, y_b.to(out_ptr.dtype.element_ty), mask=md)
    # The second half reads what other threads of this program stored in the first half.
    tl.debug_barrier()
    for i in range(half, n):
        t_f = lo + i
        t_b = lo + n - 1 - i
        state_f, y_f, _ = _scan_step(state_f, t_f, uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, s_ul, s_dtl, s_bcl,
                                  offs_d, md, offs_n, mn, A_f, D_f, bias_f)
        state_b, y_b, _ = _scan_step(state_b, t_b, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, s_ul, s_dtl, s_bcl,
                                  offs_d, md, offs_n, mn, A_b, D_b, bias_b)
        # Round each direction to the I/O dtype before summing, as the reference does.
        y_f = y_f.to(out_ptr.dtype.element_ty).to(tl.float32)
        y_b = y_b.to(out_ptr.dtype.element_ty).to(tl.float32)
        mid = t_f == t_b  # odd length: both directions meet at the middle token in the same step
        part_b = tl.load(out_ptr + t_f * s_ol + offs_d, mask=md & (t_f != t_b), other=0.0).to(tl.float32)
        part_f = tl.load(out_ptr + t_b * s_ol + offs_d, mask=md & (t_f != t_b), other=0.0).to(tl.float32)
        part_b = tl.where(mid, y_b, part_b)
        z_f = tl.load(z_ptr + t_f * s_zl + offs_d, mask=md, other=0.0).to(tl.float32)
        z_b = tl.load(z_ptr + t_b * s_zl + offs_d, mask=md, other=0.0).to(tl.float32)
        o_f = (y_f + part_b) * (z_f / (1.0 + tl.exp(-z_f)))
        o_b = (part_f + y_b) * (z_b / (1.0 + tl.exp(-z_b)))
        tl.store(out_ptr + t_f * s_ol + offs_d, o_f.to(out_ptr.dtype.element_ty), mask=md)
        tl.store(out_ptr + t_b * s_ol + offs_d, o_b.to(out_ptr.dtype.element_ty), mask=md & (t_f != t_b))
    return state_f, state_b


@triton.jit
def _load_params(A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr, offs_d, md, offs_n, mn, N):
    m2 = md[:, None] & mn[None, :]
    a_off = offs_d[:, None] * N + offs_n[None, :]
    A_f = tl.load(A_f_ptr + a_off, mask=m2, other=0.0).to(tl.float32)
    A_b = tl.load(A_b_ptr + a_off, mask=m2, other=0.0).to(tl.float32)
    D_f = tl.load(D_f_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    D_b = tl.load(D_b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    bias_f = tl.load(bias_f_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    bias_b = tl.load(bias_b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    return A_f, A_b, D_f, D_b, bias_f, bias_b


@triton.jit
def _biscan_seq_kernel(uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, z_ptr,
                       A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr,
                       L, D, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl, s_zb, s_zl,
                       out_ptr,
                       N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid (B, cdiv(D, BLOCK_D)). out is contiguous (B, L, D)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    md = offs_d < D
    offs_n = tl.arange(0, BLOCK_N)
    mn = offs_n < N
    A_f, A_b, D_f, D_b, bias_f, bias_b = _load_params(A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr,
                                                      bias_b_ptr, offs_d, md, offs_n, mn, N)
    state_f = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    state_b = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    _walk_and_combine(state_f, state_b, 0, L,
                      uf_ptr + pid_b * s_ub, dtf_ptr + pid_b * s_dtb, Bf_ptr + pid_b * s_bcb,
                      Cf_ptr + pid_b * s_bcb, ub_ptr + pid_b * s_ub, dtb_ptr + pid_b * s_dtb,
                      Bb_ptr + pid_b * s_bcb, Cb_ptr + pid_b * s_bcb, z_ptr + pid_b * s_zb,
                      out_ptr + pid_b * L * D,
                      s_ul, s_dtl, s_bcl, s_zl, D,
                      offs_d, md, offs_n, mn, A_f, A_b, D_f, D_b, bias_f, bias_b)


@triton.jit
def _biscan_chunk_state_kernel(uf_ptr, dtf_ptr, Bf_ptr, ub_ptr, dtb_ptr, Bb_ptr,
                               A_f_ptr, A_b_ptr, bias_f_ptr, bias_b_ptr,
                               L, D, CHUNK, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl,
                               hend_ptr, dtsum_ptr,
                               N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Launch 1 of the chunked variant. Grid (B, cdiv(D, BLOCK_D), n_chunks).
    hend: (B, n_chunks, 2, D, N) fp32 chunk-end states from a zero start; dtsum: (B, n_chunks, 2, D) fp32."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    md = offs_d < D
    offs_n = tl.arange(0, BLOCK_N)
    mn = offs_n < N
    A_f, A_b, D_f, D_b, bias_f, bias_b = _load_params(A_f_ptr, A_b_ptr, bias_f_ptr, bias_b_ptr, bias_f_ptr,
                                                      bias_b_ptr, offs_d, md, offs_n, mn, N)
    lo = pid_c * CHUNK
    n = tl.minimum(L - lo, CHUNK)
    state_f = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    state_b = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    sum_f = tl.zeros([BLOCK_D], dtype=tl.float32)
    sum_b = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, n):
        t_f = lo + i
        t_b = lo + n - 1 - i
        # y is not needed here; C = B keeps the loads in cache and the step code shared.
        state_f, _, dt_f = _scan_step(state_f, t_f, uf_ptr + pid_b * s_ub, dtf_ptr + pid_b * s_dtb,
                                Bf_ptr + pid_b * s_bcb, Bf_ptr + pid_b * s_bcb, s_ul, s_dtl, s_bcl,
                                offs_d, md, offs_n, mn, A_f, D_f, bias_f)
        state_b, _, dt_b = _scan_step(state_b, t_b, ub_ptr + pid_b * s_ub, dtb_ptr + pid_b * s_dtb,
                                Bb_ptr + pid_b * s_bcb, Bb_ptr + pid_b * s_bcb, s_ul, s_dtl, s_bcl,
                                offs_d, md, offs_n, mn, A_b, D_b, bias_b)
        sum_f += dt_f
        sum_b += dt_b
    row = (pid_b * n_chunks + pid_c) * 2
    m2 = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    tl.store(hend_ptr + row * D * N + dn, state_f, mask=m2)
    tl.store(hend_ptr + (row + 1) * D * N + dn, state_b, mask=m2)
    tl.store(dtsum_ptr + row * D + offs_d, sum_f, mask=md)
    tl.store(dtsum_ptr + (row + 1) * D + offs_d, sum_b, mask=md)


@triton.jit
def _biscan_chunk_out_kernel(uf_ptr, dtf_ptr, Bf_ptr, Cf_ptr, ub_ptr, dtb_ptr, Bb_ptr, Cb_ptr, z_ptr,
                             A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr, bias_b_ptr, hend_ptr, dtsum_ptr,
                             L, D, CHUNK, s_ub, s_ul, s_dtb, s_dtl, s_bcb, s_bcl, s_zb, s_zl,
                             out_ptr,
                             N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Launch 2 of the chunked variant. Grid (B, cdiv(D, BLOCK_D), n_chunks)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    md = offs_d < D
    offs_n = tl.arange(0, BLOCK_N)
    mn = offs_n < N
    A_f, A_b, D_f, D_b, bias_f, bias_b = _load_params(A_f_ptr, A_b_ptr, D_f_ptr, D_b_ptr, bias_f_ptr,
                                                      bias_b_ptr, offs_d, md, offs_n, mn, N)
    m2 = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    # Carry into this chunk: fold the end states of the chunks before it (forward) / after it (backward).
    state_f = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(0, pid_c):
        row = (pid_b * n_chunks + c) * 2
        s = tl.load(dtsum_ptr + row * D + offs_d, mask=md, other=0.0)
        h = tl.load(hend_ptr + row * D * N + dn, mask=m2, other=0.0)
        state_f = tl.exp(s[:, None] * A_f) * state_f + h
    state_b = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for j in range(0, n_chunks - 1 - pid_c):
        c = n_chunks - 1 - j
        row = (pid_b * n_chunks + c) * 2 + 1
        s = tl.load(dtsum_ptr + row * D + offs_d, mask=md, other=0.0)
        h = tl.load(hend_ptr + row * D * N + dn, mask=m2, other=0.0)
        state_b = tl.exp(s[:, None] * A_b) * state_b + h
    lo = pid_c * CHUNK
    n = tl.minimum(L - lo, CHUNK)
    _walk_and_combine(state_f, state_b, lo, n,
                      uf_ptr + pid_b * s_ub, dtf_ptr + pid_b * s_dtb, Bf_ptr + pid_b * s_bcb,
                      Cf_ptr + pid_b * s_bcb, ub_ptr + pid_b * s_ub, dtb_ptr + pid_b * s_dtb,
                      Bb_ptr + pid_b * s_bcb, Cb_ptr + pid_b * s_bcb, z_ptr + pid_b * s_zb,
                      out_ptr + pid_b * L * D,
                      s_ul, s_dtl, s_bcl, s_zl, D,
                      offs_d, md, offs_n, mn, A_f, A_b, D_f, D_b, bias_f, bias_b)


# ----------------------------------------------------------------------------------------------------
# Launch configuration

# Chunks shorter than this spend more on the carry pass and the rerun than they win in parallelism.
MIN_CHUNK = 128
# The sequential kernel is chosen when it already gives every SM this many programs.
PROGRAMS_PER_SM = 2
# SM count assumed when the device cannot be queried (H100 SXM).
DEFAULT_SM_COUNT = 132


def default_block_d(d: int, interpret: bool | None = None) -> int:
    """Channels per program. GPU: 16 ([16, 16] fp32 state per direction = 8 registers per thread per
    direction in one warp), which keeps MUSE's B=16, D=512 grid at 512 programs, ~4 per H100 SM.
    Interpreter: programs run one after another, so fewer, wider programs are much faster."""
    interpret = triton_interpreting() if interpret is None else interpret
    if interpret:
        return min(triton.next_power_of_2(max(d, 1)), 64)
    return 16


def choose_variant(batch: int, d: int, length: int, block_d: int, sm_count: int | None = None
                   ) -> tuple[str, int]:
    """("sequential", length) or ("chunked", chunk_size).

    Heuristic: the sequential kernel has batch * cdiv(d, block_d) programs, each walking L steps. If that
    gives at least PROGRAMS_PER_SM programs per SM, the chunked variant's doubled exp work cannot pay off:
    sequential. Otherwise split L into just enough chunks (each >= MIN_CHUNK tokens) to reach that
    occupancy. Under the interpreter (no SMs; programs run serially) the sequential kernel is always
    cheaper. The constants are first guesses, to be tuned with benchmarks/gpu_check.py on a GPU.
    """
    if sm_count is None:
        sm_count = DEFAULT_SM_COUNT
    programs = batch * triton.cdiv(d, block_d)
    target = PROGRAMS_PER_SM * sm_count
    if programs >= target or length < 2 * MIN_CHUNK:
        return "sequential", max(length, 1)
    n_chunks = min(triton.cdiv(target, programs), length // MIN_CHUNK)
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
    """Validate the scan's inputs (one-line ValueErrors) and lay them out as the Triton scans read them:
    channel stride 1, one (batch, row) stride pair per forward/backward pair and one for B/C, D and dt
    bias as float32 (zeros when None). Returns ((Bt, L, D, N), then the inputs in the same order, A_f and
    A_b left out: each kernel lays A out its own way)."""
    if not isinstance(u_f, torch.Tensor) or u_f.dim() != 3:
        raise ValueError(f"u_f must be a (B, L, D) tensor, got {getattr(u_f, 'shape', type(u_f).__name__)}")
    bsz, length, d = u_f.shape
    dev = u_f.device
    if not isinstance(A_f, torch.Tensor) or A_f.dim() != 2 or A_f.shape[0] != d:
        raise ValueError(f"A_f must be (D={d}, N), got {getattr(A_f, 'shape', None)}")
    n = A_f.shape[1]
    if tuple(A_b.shape) != (d, n):
        raise ValueError(f"A_b must be (D={d}, N={n}), got {tuple(A_b.shape)}")
    seq, st = (bsz, length, d), (bsz, length, n)
    u_f, u_b = _pair(_rows("u_f", u_f, seq, dev), _rows("u_b", u_b, seq, dev))
    delta_f, delta_b = _pair(_rows("delta_f", delta_f, seq, dev), _rows("delta_b", delta_b, seq, dev))
    bc = [_rows(nm, t, st, dev) for nm, t in (("B_f", B_f), ("C_f", C_f), ("B_b", B_b), ("C_b", C_b))]
    if len({t.stride()[:2] for t in bc}) != 1:
        bc = [t.contiguous() for t in bc]
    B_f, C_f, B_b, C_b = bc
    z = _rows("z", z, seq, dev)
    if u_b.dtype != u_f.dtype:
        raise ValueError(f"u_b dtype {u_b.dtype} must equal u_f dtype {u_f.dtype}")
    return ((bsz, length, d, n), u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z,
            _vec("D_f", D_f, d, dev), _vec("D_b", D_b, d, dev),
            _vec("delta_bias_f", delta_bias_f, d, dev), _vec("delta_bias_b", delta_bias_b, d, dev))


def bidirectional_scan_triton(u_f: torch.Tensor, delta_f: torch.Tensor, B_f: torch.Tensor, C_f: torch.Tensor,
                              u_b: torch.Tensor, delta_b: torch.Tensor, B_b: torch.Tensor, C_b: torch.Tensor,
                              z: torch.Tensor, A_f: torch.Tensor, A_b: torch.Tensor, D_f: torch.Tensor | None,
                              D_b: torch.Tensor | None, delta_bias_f: torch.Tensor | None,
                              delta_bias_b: torch.Tensor | None, *, variant: str = "auto",
                              chunk_size: int | None = None, block_d: int | None = None) -> torch.Tensor:
    """Fused bidirectional selective scan; same arguments and result as `bidirectional_scan_ref`.

    u_*, delta_*, z: (Bt, L, D); B_*, C_*: (Bt, L, N); all float32/float16/bfloat16, channel stride 1
    (row-strided views such as slices of a projection output are read in place). A_f, A_b: (D, N) float32,
    the already negated A = -exp(A_log). D_*, delta_bias_*: (D,) or None (zero).
    Returns silu(z) * (y_f + y_b) as a contiguous (Bt, L, D) tensor in u_f.dtype; state math is float32.

    variant: "sequential" (one launch), "chunked" (two launches, chunk_size tokens per chunk) or "auto"
    (`choose_variant`). block_d: channels per program (default `default_block_d`).
    """
    ((bsz, length, d, n), u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, D_f, D_b, bias_f, bias_b) = \
        prepare_inputs(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b, delta_bias_f,
                       delta_bias_b)
    dev, seq = u_f.device, (bsz, length, d)
    A_f = A_f.to(device=dev, dtype=torch.float32).contiguous()
    A_b = A_b.to(device=dev, dtype=torch.float32).contiguous()

    out = torch.empty(seq, dtype=u_f.dtype, device=dev)
    if out.numel() == 0:
        return out
    block_d = block_d or default_block_d(d)
    block_n = triton.next_power_of_2(n)
    if variant == "auto":
        variant, auto_chunk = choose_variant(bsz, d, length, block_d, _sm_count(dev))
        chunk_size = chunk_size or auto_chunk
    if variant == "sequential":
        grid = (bsz, triton.cdiv(d, block_d))
        _biscan_seq_kernel[grid](u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z,
                                 A_f, A_b, D_f, D_b, bias_f, bias_b,
                                 length, d, u_f.stride(0), u_f.stride(1), delta_f.stride(0), delta_f.stride(1),
                                 B_f.stride(0), B_f.stride(1), z.stride(0), z.stride(1),
                                 out, N=n, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=1)
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
                                     hend, dtsum, N=n, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=1)
    _biscan_chunk_out_kernel[grid](u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z,
                                   A_f, A_b, D_f, D_b, bias_f, bias_b, hend, dtsum,
                                   length, d, chunk_size, u_f.stride(0), u_f.stride(1),
                                   delta_f.stride(0), delta_f.stride(1), B_f.stride(0), B_f.stride(1),
                                   z.stride(0), z.stride(1),
                                   out, N=n, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=1)
    return out


# ----------------------------------------------------------------------------------------------------
# Ahead-of-time compilation specs (for the AOT tests and the TensorRT plugin)

_SEQ_INPUTS = ["uf_ptr", "dtf_ptr", "Bf_ptr", "Cf_ptr", "ub_ptr", "dtb_ptr", "Bb_ptr", "Cb_ptr", "z_ptr"]
_PARAMS = ["A_f_ptr", "A_b_ptr", "D_f_ptr", "D_b_ptr", "bias_f_ptr", "bias_b_ptr"]


def _spec(fn, pointers: dict, ints: list, outputs: dict, constexprs: dict, grid: str) -> dict:
    signature = dict(pointers)
    signature.update({k: "i32" for k in ints})
    signature.update(outputs)
    signature.update({k: "constexpr" for k in constexprs})
    # num_warps=1: the wrapper launches every scan kernel with one warp per program.
    return {"fn": fn, "signature": signature, "constexprs": dict(constexprs), "grid": grid,
            "options": {"num_warps": 1}}


def scan_aot_spec(dtype: str = "bf16", d_state: int = 16, block_d: int = 16) -> dict:
    """ASTSource inputs for the one-launch sequential kernel. dtype: Triton name of the activation type
    ("fp32", "fp16", "bf16"); A, D and the dt biases are fp32. Launch with num_warps=1."""
    ptrs = {k: f"*{dtype}" for k in _SEQ_INPUTS}
    ptrs.update({k: "*fp32" for k in _PARAMS})
    ints = ["L", "D", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl", "s_zb", "s_zl"]
    cx = {"N": d_state, "BLOCK_D": block_d, "BLOCK_N": triton.next_power_of_2(d_state)}
    return _spec(_biscan_seq_kernel, ptrs, ints, {"out_ptr": f"*{dtype}"}, cx, "(B, cdiv(D, BLOCK_D))")


def chunk_state_aot_spec(dtype: str = "bf16", d_state: int = 16, block_d: int = 16) -> dict:
    """Launch 1 of the chunked variant; its outputs hend (B, n_chunks, 2, D, N) and dtsum
    (B, n_chunks, 2, D) are fp32 workspace tensors the caller allocates."""
    ptrs = {k: f"*{dtype}" for k in ["uf_ptr", "dtf_ptr", "Bf_ptr", "ub_ptr", "dtb_ptr", "Bb_ptr"]}
    ptrs.update({k: "*fp32" for k in ["A_f_ptr", "A_b_ptr", "bias_f_ptr", "bias_b_ptr"]})
    ints = ["L", "D", "CHUNK", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl"]
    cx = {"N": d_state, "BLOCK_D": block_d, "BLOCK_N": triton.next_power_of_2(d_state)}
    return _spec(_biscan_chunk_state_kernel, ptrs, ints, {"hend_ptr": "*fp32", "dtsum_ptr": "*fp32"}, cx,
                 "(B, cdiv(D, BLOCK_D), cdiv(L, CHUNK))")


def chunk_out_aot_spec(dtype: str = "bf16", d_state: int = 16, block_d: int = 16) -> dict:
    """Launch 2 of the chunked variant (reads launch 1's workspace)."""
    ptrs = {k: f"*{dtype}" for k in _SEQ_INPUTS}
    ptrs.update({k: "*fp32" for k in _PARAMS + ["hend_ptr", "dtsum_ptr"]})
    ints = ["L", "D", "CHUNK", "s_ub", "s_ul", "s_dtb", "s_dtl", "s_bcb", "s_bcl", "s_zb", "s_zl"]
    cx = {"N": d_state, "BLOCK_D": block_d, "BLOCK_N": triton.next_power_of_2(d_state)}
    return _spec(_biscan_chunk_out_kernel, ptrs, ints, {"out_ptr": f"*{dtype}"}, cx,
                 "(B, cdiv(D, BLOCK_D), cdiv(L, CHUNK))")


# name -> function(dtype="bf16", ...) returning {"fn", "signature", "constexprs", "grid", "options"}:
# triton.compile(ASTSource(fn, signature, constexprs), target=..., options=options).
AOT_SPECS = {
    "bidirectional_scan": scan_aot_spec,
    "bidirectional_scan_chunk_state": chunk_state_aot_spec,
    "bidirectional_scan_chunk_out": chunk_out_aot_spec,
}
