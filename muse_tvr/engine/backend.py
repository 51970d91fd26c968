"""Execution backends for the MUSE head: "reference" (plain PyTorch, the oracle), "triton" (fused kernels)
and "cpu-chunked" (the blocked PyTorch scan of `muse_tvr.kernels.selective_scan.cpu_chunked`, ~2x the
reference on CPU, opt-in).

Selection (`resolve_backend`): "auto" means triton on CUDA tensors and reference everywhere else; asking
for "triton" on CPU works only under TRITON_INTERPRET=1 (tests), since Triton has no CPU driver.
"cpu-chunked" is pure PyTorch and runs on any device. "ort" runs the whole learner (pyramid, blocks,
pooling) through ONNX Runtime with the project's C++ op library (CPU tensors only; needs `make -C cpp`);
the model's head is exported once to a temporary folder and re-exported when its weights change.

The triton backend runs a streamlined copy of each MUSE block (`FastBlock`), built once from the module's
parameters and rebuilt automatically when they change (in-place loads bump a parameter's version):
  - out_proj (no bias) followed by temporal_fc is ONE matrix W_fc @ W_out (dropout is the identity at
    inference), folded in float64 and stored in the head dtype: one GEMM instead of two;
  - A = -exp(A_log) is precomputed (float32);
  - conv + bias + SiLU of both directions run in one Triton launch (`bidirectional_causal_conv_triton`),
    reading x in place from in_proj's output;
  - both scans, their dt bias/softplus/D skip and the shared silu(z) gate run in one Triton launch
    (`bidirectional_scan_triton`), reading z, B and C in place (row-strided views, no copies).
The reference path in `mamba.py` is untouched and stays the default on CPU.

Also here: `VideoEncoder`, which wraps a MuseModel with CUDA-graph capture of the whole video encoder for
fixed input shapes (CUDA only) and a per-video embedding cache (`EmbeddingCache`).
"""
from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "reference", "triton", "cpu-chunked", "ort")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(name: str | None, device: torch.device | str) -> str:
    """The backend that will actually run: "reference", "triton", "cpu-chunked" or "ort"."""
    name = "auto" if name is None else name
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    device = torch.device(device)
    if name == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "reference"
    if name == "triton":
        if not triton_available():
            raise ValueError("backend 'triton' needs the triton package (pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError(f"backend 'triton' on {device.type} tensors needs TRITON_INTERPRET=1 set before "
                             "muse_tvr is imported (the interpreter is slow: tests only); use 'reference'")
    if name == "ort":
        if device.type != "cpu":
            raise ValueError(f"backend 'ort' runs on CPU tensors, got {device.type}")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ValueError("backend 'ort' needs onnxruntime (pip install 'muse-tvr[export]')") from None
        from ..export.ort_runner import find_op_library
        find_op_library()  # FileNotFoundError saying how to build it
    return name


# ----------------------------------------------------------------------------------------------------
# Streamlined blocks


@dataclass
class FastBlock:
    """One MUSE block with folded weights. __call__(x (B, L, d)) -> (B, L, d), same dtype as the weights."""

    ln_weight: torch.Tensor
    ln_bias: torch.Tensor
    ln_eps: float
    w_in: torch.Tensor          # (2 * d_inner, d)
    conv_w_f: torch.Tensor      # (d_inner, W)
    conv_b_f: torch.Tensor
    conv_w_b: torch.Tensor
    conv_b_b: torch.Tensor
    xp_f: torch.Tensor          # (rank + 2N, d_inner)
    xp_b: torch.Tensor
    dt_w_f: torch.Tensor        # (d_inner, rank)
    dt_w_b: torch.Tensor
    dt_bias_f: torch.Tensor     # (d_inner,)
    dt_bias_b: torch.Tensor
    A_f: torch.Tensor           # (d_inner, N) float32, = -exp(A_log)
    A_b: torch.Tensor
    D_f: torch.Tensor
    D_b: torch.Tensor
    w_out: torch.Tensor         # (d, d_inner) = temporal_fc.weight @ out_proj.weight
    b_out: torch.Tensor         # temporal_fc.bias
    rank: int
    d_state: int

    @classmethod
    @torch.no_grad()
    def from_module(cls, block) -> "FastBlock":
        m = block.mamba
        dtype = block.temporal_fc.weight.dtype
        folded = block.temporal_fc.weight.double() @ m.out_proj.weight.double()
        return cls(
            ln_weight=block.layer_norm1.weight.detach(), ln_bias=block.layer_norm1.bias.detach(),
            ln_eps=block.layer_norm1.eps, w_in=m.in_proj.weight.detach(),
            conv_w_f=m.conv1d.weight.detach()[:, 0].contiguous(), conv_b_f=m.conv1d.bias.detach(),
            conv_w_b=m.conv1d_b.weight.detach()[:, 0].contiguous(), conv_b_b=m.conv1d_b.bias.detach(),
            xp_f=m.x_proj.weight.detach(), xp_b=m.x_proj_b.weight.detach(),
            dt_w_f=m.dt_proj.weight.detach(), dt_w_b=m.dt_proj_b.weight.detach(),
            dt_bias_f=m.dt_proj.bias.detach().float(), dt_bias_b=m.dt_proj_b.bias.detach().float(),
            A_f=-torch.exp(m.A_log.detach().float()), A_b=-torch.exp(m.A_b_log.detach().float()),
            D_f=m.D.detach().float(), D_b=m.D_b.detach().float(),
            w_out=folded.to(dtype), b_out=block.temporal_fc.bias.detach(),
            rank=m.dt_rank, d_state=m.d_state)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from ..kernels.causal_conv.triton_conv import bidirectional_causal_conv_triton
        from ..kernels.selective_scan.triton_scan import bidirectional_scan_triton
        di = self.w_in.shape[0] // 2
        h = F.layer_norm(x, (x.shape[-1],), self.ln_weight, self.ln_bias, self.ln_eps)
        xz = F.linear(h, self.w_in)
        xi, z = xz[..., :di], xz[..., di:]          # views: the kernels read them in place
        u_f, u_b = bidirectional_causal_conv_triton(xi, self.conv_w_f, self.conv_b_f, self.conv_w_b, self.conv_b_b)
        r, n = self.rank, self.d_state
        xd_f, xd_b = F.linear(u_f, self.xp_f), F.linear(u_b, self.xp_b)
        dt_f, dt_b = F.linear(xd_f[..., :r], self.dt_w_f), F.linear(xd_b[..., :r], self.dt_w_b)
        y = bidirectional_scan_triton(u_f, dt_f, xd_f[..., r:r + n], xd_f[..., r + n:],
                                      u_b, dt_b, xd_b[..., r:r + n], xd_b[..., r + n:], z,
                                      self.A_f, self.A_b, self.D_f, self.D_b, self.dt_bias_f, self.dt_bias_b)
        return torch.addmm(self.b_out, y.reshape(-1, di), self.w_out.t()).reshape(x.shape).add_(x)


class FastHead:
    """The MUSE head on the triton backend. __call__(seq (B, L, d)) -> (B, L, d)."""

    def __init__(self, head):
        self.blocks = [FastBlock.from_module(b) for b in head.MS_mamba]

    def __call__(self, seq: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            seq = block(seq)
        return seq


def parameter_fingerprint(module: torch.nn.Module) -> tuple:
    """Changes when any parameter is replaced, moved, cast or modified in place (host-side, no sync)."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())


_FAST_HEADS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def fast_head(head) -> FastHead:
    """The streamlined copy of `head`, cached and rebuilt when its parameters change."""
    fp = parameter_fingerprint(head)
    hit = _FAST_HEADS.get(head)
    if hit is None or hit[0] != fp:
        hit = (fp, FastHead(head))
        _FAST_HEADS[head] = hit
    return hit[1]


_ORT_HEADS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def ort_encode_tokens(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MuseModel.encode_tokens through ONNX Runtime + the op library: (B, T, 1+g*g, C), (B, T) -> (B, C)
    float32. The float32 head export is made on first use (tens of seconds at ViT-B/32 size) and kept
    while the pyramid and head weights are unchanged. The export's folder is removed once the session has
    read it: nothing is left behind per process."""
    import tempfile

    from ..export.ort_runner import OrtHead

    fp = parameter_fingerprint(model.pyramid) + parameter_fingerprint(model.head)
    hit = _ORT_HEADS.get(model)
    if hit is None or hit[0] != fp:
        with tempfile.TemporaryDirectory(prefix="muse-tvr-ort-") as workdir:
            hit = (fp, OrtHead.from_model(model, workdir))
        _ORT_HEADS[model] = hit
    return torch.from_numpy(hit[1](tokens.float(), mask.float()))


def build_sequence(model, tokens: torch.Tensor, backend: str | None = "auto") -> torch.Tensor:
    """model.build_sequence on the selected backend: CLIP tokens (B, T, 1+g*g, C) -> (B, L, C) head dtype.
    The triton backend uses the fused pyramid kernel (muse_tvr.kernels.pyramid) when it is available."""
    if resolve_backend(backend, tokens.device) == "triton":
        try:
            from ..kernels.pyramid import build_sequence_triton
        except ImportError:
            build_sequence_triton = None
        if build_sequence_triton is not None:
            return build_sequence_triton(model, tokens)
    return model.build_sequence(tokens)


def run_head(head, seq: torch.Tensor, backend: str | None = "auto") -> torch.Tensor:
    """The MUSE head on the selected backend: seq (B, L, d) in the head dtype -> (B, L, d)."""
    resolved = resolve_backend(backend, seq.device)
    if resolved == "reference":
        return head(seq)
    if resolved == "cpu-chunked":
        from ..kernels.selective_scan.cpu_chunked import muse_head_forward_chunked
        return muse_head_forward_chunked(head, seq)
    if resolved == "ort":
        raise ValueError("backend 'ort' runs the whole learner (tokens -> embedding): call "
                         "MuseModel.encode_tokens, not run_head")
    return fast_head(head)(seq)


# ----------------------------------------------------------------------------------------------------
# Video encoder: CUDA graphs and embedding cache


class EmbeddingCache:
    """Least-recently-used map from a video key to its embedding (C,) float32, kept on the CPU.

    The video embedding does not depend on the text (muse-model.md section 6), so a retrieval service
    computes it once per video. `model_fingerprint` invalidates everything when the weights change.
    """

    def __init__(self, max_items: int = 100_000):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._fingerprint: tuple | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def check_model(self, fingerprint: tuple) -> None:
        if fingerprint != self._fingerprint:
            self._items.clear()
            self._fingerprint = fingerprint

    def get(self, key: str) -> torch.Tensor | None:
        v = self._items.get(key)
        if v is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: str, emb: torch.Tensor) -> None:
        self._items[key] = emb.detach().float().cpu()
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)


def video_key(path: str | os.PathLike) -> str:
    """A cache key for a video file: absolute path, size and modification time (a rewritten file misses)."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


class VideoEncoder:
    """encode(frames (B, T, 3, S, S) float, mask (B, T) 0/1 or None, keys: list of B str or None)
    -> (B, C) float32 unit-norm video embeddings, equal to model.encode_video on the same backend.

    On CUDA with use_graphs=True, the whole encoder (CLIP, pyramid, head, readout, pooling) is captured
    once per (B, T, dtype) into a CUDA graph and replayed: kernel launch overhead disappears, which matters
    for the head's many small launches at B = 1. Inputs are validated outside the graph (validation syncs).
    With keys, embeddings are looked up in / stored into `cache`; only the misses are computed.
    """

    def __init__(self, model, use_graphs: bool = True, cache: EmbeddingCache | None = None,
                 warmup: int = 2):
        self.model = model
        self.use_graphs = use_graphs
        self.cache = cache if cache is not None else EmbeddingCache()
        self.warmup = warmup
        self._graphs: dict[tuple, tuple] = {}
        self._graph_fp: tuple | None = None

    def _encode_unchecked(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from .sequence import pool_frames, readout
        m = self.model
        backend = getattr(m, "backend", "auto")
        seq = run_head(m.head, build_sequence(m, m.encode_frames(frames), backend), backend)
        return pool_frames(readout(seq, frames.shape[1], m.config.head.order), mask)

    def _graphed(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        fp = parameter_fingerprint(self.model)
        if fp != self._graph_fp:  # captured graphs hold pointers to the old weights
            self._graphs.clear()
            self._graph_fp = fp
        key = (tuple(frames.shape), frames.dtype, frames.device)
        if key not in self._graphs:
            static_frames, static_mask = frames.clone(), mask.clone().float()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(self.warmup):  # Triton compiles and cuBLAS picks algorithms outside capture
                    self._encode_unchecked(static_frames, static_mask)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                static_out = self._encode_unchecked(static_frames, static_mask)
            self._graphs[key] = (graph, static_frames, static_mask, static_out)
        graph, static_frames, static_mask, static_out = self._graphs[key]
        static_frames.copy_(frames)
        static_mask.copy_(mask)
        graph.replay()
        return static_out.clone()

    @torch.no_grad()
    def _compute(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.use_graphs and frames.is_cuda:
            return self._graphed(frames, mask)
        return self._encode_unchecked(frames, mask)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
               keys: list[str] | None = None) -> torch.Tensor:
        mask = self.model.check_frames(frames, mask)
        if keys is None:
            return self._compute(frames, mask)
        if len(keys) != frames.shape[0]:
            raise ValueError(f"got {len(keys)} keys for a batch of {frames.shape[0]} videos")
        self.cache.check_model(parameter_fingerprint(self.model))
        cached = [self.cache.get(k) for k in keys]
        missing = [i for i, v in enumerate(cached) if v is None]
        if missing:
            idx = torch.tensor(missing, device=frames.device)
            fresh = self._compute(frames.index_select(0, idx), mask.index_select(0, idx))
            for j, i in enumerate(missing):
                cached[i] = fresh[j]
                self.cache.put(keys[i], fresh[j])
        return torch.stack([v.to(frames.device) for v in cached])

