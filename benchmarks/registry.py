"""What can be benchmarked: (target, backend) pairs, each knowing when it can run and how to set itself up.

Targets (all at width 512 unless the preset says otherwise):
  scan     one bidirectional selective scan, inputs (B, L, D) fp32, N = 16
  conv     the forward-causal + backward-anti-causal depthwise conv pair, (B, L, D)
  block    one MUSE block (LN, in_proj, conv, x/dt proj, both scans, out_proj, temporal_fc), (B, L, d)
  head     the sequence learner alone, (B, L, d) -> (B, L, d): Mamba head or Transformer head
  learner  CLIP tokens (B, T, 1+g*g, C) -> video embedding: pyramid + head + readout + pooling (what
           ONNX Runtime's exported "head" model computes, so the route every backend can be compared on)
  pyramid  the feature pyramid + sequence assembly from CLIP tokens (B, T, 1+g*g, C)
  clip     the CLIP image tower on (B*T, 3, 224, 224) frames

Backends: the engine's (muse_tvr.engine.backend.names(), "auto" aside), each running the model's own
code with its ops, plus two baselines:
  reference / cpu-chunked / cpp / triton / ort   the engine's backends (see muse_tvr/engine/backend.py)
  mamba-ssm          upstream CUDA kernels (two selective_scan_fn calls + flips); CUDA + compiled mamba-ssm
  transformer-depth  Transformer head, 4 blocks, MLP x4 (depth-matched)
  transformer-param  Transformer head, 2 blocks, MLP hidden solved to the MUSE head's parameter count

A backend that cannot run says why (`skip_reason`); the harness records the reason instead of a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from muse_tvr.engine import backend as engine_backends  # names() loads the plugin backends ("ort")
from muse_tvr.engine.config import MuseConfig

ENGINE_BACKENDS = tuple(n for n in engine_backends.names() if n != "auto")
MAMBA_BACKENDS = ENGINE_BACKENDS + ("mamba-ssm",)
TRANSFORMER_BACKENDS = ("transformer-depth", "transformer-param")
BACKENDS = MAMBA_BACKENDS + TRANSFORMER_BACKENDS
TARGETS = ("scan", "conv", "block", "head", "learner", "pyramid", "clip")


@dataclass
class Point:
    """One shape: batch B, and either a sequence length L (scan/conv/block/head) or frames T (pyramid/clip)."""
    config: MuseConfig
    batch: int = 1
    frames: int = 12
    length: int | None = None  # None: the length MUSE builds from `frames` frames of `config`

    @property
    def seq_len(self) -> int:
        return self.length if self.length is not None else self.config.sequence_length(self.frames)

    def label(self) -> str:
        return f"{self.config.name} T={self.frames} L={self.seq_len} B={self.batch}"


@dataclass
class Prepared:
    fn: Callable[[], Any]             # the call to time (inputs already built)
    params: int | None = None         # parameters of the module timed, where that means something
    flops: float | None = None        # matrix FLOPs of one call, for the roofline
    info: dict = field(default_factory=dict)


def skip_reason(target: str, backend: str, device: torch.device) -> str | None:
    """None if (target, backend) can run on `device`; otherwise a sentence saying why not."""
    if target not in TARGETS:
        return f"unknown target {target!r}"
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}"
    if backend in TRANSFORMER_BACKENDS and target not in ("head", "block", "learner"):
        return "the Transformer baselines replace the sequence learner only (targets head, block, learner)"
    if backend == "mamba-ssm":
        if device.type != "cuda":
            return "mamba-ssm's selective_scan_fn is a CUDA kernel; this run is on CPU"
        if target != "scan":
            return "mamba-ssm is timed on the scan only (two calls plus flips)"
        try:
            import selective_scan_cuda
        except ImportError:
            return "mamba-ssm's compiled extension selective_scan_cuda is not importable"
        if not hasattr(selective_scan_cuda, "fwd"):  # the tests register an empty stand-in module
            return "selective_scan_cuda is a stand-in module, not mamba-ssm's compiled extension"
        return None
    if backend in ENGINE_BACKENDS:
        eng = engine_backends.get(backend)
        if backend == "triton" and device.type != "cuda":
            return ("Triton kernels need a CUDA device; on CPU they only run under TRITON_INTERPRET=1, "
                    "whose timings say nothing about GPU speed")
        reason = eng.unavailable(device)
        if reason:
            return reason
        if eng.learner is not None and target != "learner":
            return f"{backend} runs the whole learner: tokens -> embedding (target learner)"
        if target == "clip" and backend != "reference":
            return "CLIP runs through PyTorch only"
        if target == "pyramid" and eng.pyramid is engine_backends.REFERENCE.pyramid and backend != "reference":
            return f"{backend} uses the reference pyramid"
        if target == "conv" and eng.conv is engine_backends.REFERENCE.conv and backend != "reference":
            return f"{backend} uses the reference conv"
    return None


# ----- FLOP counts (matrix work only; elementwise and the scan are not GEMM FLOPs) ----------------
def mamba_head_flops(cfg: MuseConfig, length: int, batch: int = 1) -> float:
    """GEMM FLOPs of the Mamba head: in_proj, both x_proj and dt_proj, and out_proj folded into temporal_fc."""
    h = cfg.head
    d, di, r, n = h.d_model, h.d_inner, h.rank, h.d_state
    per_token = 2 * d * 2 * di + 2 * (2 * di * (r + 2 * n) + 2 * r * di)
    per_token += 2 * di * d
    return float(per_token * length * batch * h.depth)


def transformer_head_flops(tcfg, length: int, batch: int = 1) -> float:
    """GEMM FLOPs of the Transformer head: QKV, out proj, MLP, and the two attention matmuls."""
    d, hdim = tcfg.d_model, tcfg.mlp_hidden
    linear = 2 * length * (4 * d * d + 2 * d * hdim)
    attention = 2 * 2 * length * length * d
    return float((linear + attention) * batch * tcfg.depth)


# ----- builders ------------------------------------------------------------------------------------
def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mamba_head(cfg: MuseConfig, device, depth: int | None = None):
    from muse_tvr.engine.config import HeadConfig
    from muse_tvr.engine.mamba import MuseHead
    hcfg = cfg.head if depth is None else HeadConfig(**{**cfg.head.__dict__, "depth": depth})
    torch.manual_seed(0)
    return MuseHead(hcfg).to(device).eval()


def _transformer_cfg(backend: str, cfg: MuseConfig):
    from muse_tvr.engine.transformer_head import depth_matched, parameter_matched
    if backend == "transformer-depth":
        return depth_matched(cfg.head.d_model, cfg.head.depth)
    with torch.device("meta"):
        target = sum(p.numel() for p in _mamba_head(cfg, "meta").parameters())
    return parameter_matched(target, cfg.head.d_model)


def _scan_inputs(b: int, length: int, d: int, n: int, device, dtype):
    g = _gen(1)
    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)
    A = (-torch.exp(torch.randn(d, n, generator=g) * 0.5)).to(device)
    f = [rnd(b, length, d), rnd(b, length, d, scale=0.5), rnd(b, length, n), rnd(b, length, n)]
    bw = [rnd(b, length, d), rnd(b, length, d, scale=0.5), rnd(b, length, n), rnd(b, length, n)]
    z = rnd(b, length, d)
    vec = lambda: torch.randn(d, generator=g).to(device)  # noqa: E731
    return (*f, *bw, z, A, A.clone(), vec(), vec(), vec(), vec())


def build(target: str, backend: str, point: Point, device: torch.device,
          dtype: torch.dtype = torch.float32) -> Prepared:
    """Set up one benchmark case; the returned `fn` is what gets timed. Call `skip_reason` first."""
    reason = skip_reason(target, backend, device)
    if reason:
        raise ValueError(f"{target}/{backend} cannot run: {reason}")
    cfg, b, length = point.config, point.batch, point.seq_len
    d, n = cfg.head.d_model, cfg.head.d_state
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731

    if target == "scan":
        args = _scan_inputs(b, length, cfg.head.d_inner, n, device, dtype)
        if backend == "mamba-ssm":  # two upstream calls in its (B, D, L) layout, the backward one flipped
            return _mamba_ssm_scan(args)
        scan = engine_backends.get(backend).scan
        return Prepared(lambda: scan(*args))

    if target == "conv":
        g = _gen(2)
        x = torch.randn(b, length, cfg.head.d_inner, generator=g).to(device, dtype)
        w = torch.randn(2, cfg.head.d_inner, cfg.head.d_conv, generator=g).to(device)
        bias = torch.randn(2, cfg.head.d_inner, generator=g).to(device)
        conv = engine_backends.get(backend).conv
        return Prepared(lambda: conv(x, w[0], bias[0], w[1], bias[1]))

    if target in ("block", "head"):
        depth = 1 if target == "block" else None
        seq = torch.randn(b, length, d, generator=_gen(3)).to(device, dtype)
        if backend in TRANSFORMER_BACKENDS:
            from muse_tvr.engine.transformer_head import TransformerHead, TransformerHeadConfig
            tcfg = _transformer_cfg(backend, cfg)
            if depth is not None:
                tcfg = TransformerHeadConfig(d_model=tcfg.d_model, depth=1, heads=tcfg.heads,
                                             mlp_hidden=tcfg.mlp_hidden)
            torch.manual_seed(0)
            head = TransformerHead(tcfg).to(device, dtype).eval()
            return Prepared(lambda: head(seq), count(head), transformer_head_flops(tcfg, length, b),
                            {"depth": tcfg.depth, "mlp_hidden": tcfg.mlp_hidden})
        head = _mamba_head(cfg, device, depth).to(dtype)
        flops = mamba_head_flops(cfg, length, b) / (cfg.head.depth if depth else 1)
        ops = engine_backends.get(backend)
        return Prepared(lambda: head(seq, ops), count(head), flops)

    if target == "learner":
        tokens = torch.randn(b, point.frames, cfg.vision.tokens, d, generator=_gen(6)).to(device, dtype)
        mask = torch.ones(b, point.frames, device=device)
        if backend in TRANSFORMER_BACKENDS:
            from muse_tvr.engine.transformer_head import TransformerLearner
            torch.manual_seed(0)
            learner = TransformerLearner(cfg, _transformer_cfg(backend, cfg)).to(device, dtype).eval()
            return Prepared(lambda: learner.encode_tokens(tokens, mask), count(learner.head),
                            transformer_head_flops(learner.head.cfg, length, b))
        from muse_tvr.engine.model import MuseModel
        torch.manual_seed(0)
        model = MuseModel(cfg).to(device).eval().set_backend(backend)
        # A whole-learner route's first call builds it (the ONNX export): done here, not timed.
        model.encode_tokens(tokens, mask)
        return Prepared(lambda: model.encode_tokens(tokens, mask), count(model.head), mamba_head_flops(cfg, length, b),
                        {"backend": model.resolved_backend(device).name})

    if target == "pyramid":
        from muse_tvr.engine.pyramid import FeaturePyramid
        torch.manual_seed(0)
        pyr = FeaturePyramid(cfg.head, cfg.vision).to(device, dtype).eval()
        tokens = torch.randn(b, point.frames, cfg.vision.tokens, d, generator=_gen(4)).to(device, dtype)
        ops = engine_backends.get(backend)
        pyr(tokens, ops)  # derives the kernel's packed weights once, outside the timed calls
        return Prepared(lambda: pyr(tokens, ops), count(pyr))

    if target == "clip":
        from muse_tvr.engine.clip import ClipVisual
        torch.manual_seed(0)
        visual = ClipVisual(cfg.vision).to(device, dtype).eval()
        s = cfg.vision.image_size
        frames = torch.randn(b * point.frames, 3, s, s, generator=_gen(5)).to(device, dtype)
        return Prepared(lambda: visual(frames), count(visual))
    raise ValueError(f"unknown target {target!r}")


def _mamba_ssm_scan(args) -> Prepared:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    u_f, dl_f, B_f, C_f, u_b, dl_b, B_b, C_b, z, A_f, A_b, D_f, D_b, bias_f, bias_b = args
    t = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731  (B, L, X) -> (B, X, L)
    fwd = [t(u_f), t(dl_f), A_f, t(B_f), t(C_f), D_f, t(z), bias_f]
    bwd = [t(u_b).flip(-1), t(dl_b).flip(-1), A_b, t(B_b).flip(-1), t(C_b).flip(-1), D_b, t(z).flip(-1), bias_b]

    def run():
        y = selective_scan_fn(*fwd, delta_softplus=True)
        return y + selective_scan_fn(*bwd, delta_softplus=True).flip(-1)
    return Prepared(run, info={"note": "two selective_scan_fn calls with z gating each (upstream has no "
                                       "bidirectional op); flips of the inputs are outside the timed call"})
