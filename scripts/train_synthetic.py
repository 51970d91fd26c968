"""Train the `synthetic-shapes` MUSE on the synthetic world (muse_tvr/engine/synthetic.py), on CPU, seeded.

    nice -n 10 .venv/bin/python scripts/train_synthetic.py --out muse_tvr/models/synthetic-shapes

Recipe (docs/synthetic-shapes.md): the engine's own modules (CLIP towers, pyramid, bidirectional Mamba
head, readout, pooling) trained from scratch with a symmetric InfoNCE loss (text->video and video->text)
scaled by the model's logit_scale. Each step holds one clip of each of the 48 captions (so there are no
duplicate positives). Clips are rendered over every range of the world, widened a little (sizes, frame
rates, durations, radii, colour jitter, offsets, edge positions, drawing conventions, noise, background
level), with part of the pool encoded to H.264/MPEG-4 files and decoded back through the engine's own
reader; frames are selected by the engine's sampling rule (`video.reference_indices`), so training sees the
same frames as inference.

The scan: the reference scan is a Python loop whose autograd graph costs ~20 s per step here, so training
runs the SAME math (s_t = exp(dt_t A) s_{t-1} + dt_t u_t B_t, y_t = s_t . C_t + D u_t, both directions,
gated by silu(z)) through a custom autograd function with a hand-written backward (`SelectiveScan`,
checked against the reference with --check). Evaluation and the shipped model use the engine's backends.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from muse_tvr.engine import synthetic as W  # noqa: E402
from muse_tvr.engine.backend import Backend  # noqa: E402
from muse_tvr.engine.config import TINY, HeadConfig, MuseConfig  # noqa: E402
from muse_tvr.engine.model import MuseModel, learn  # noqa: E402
from muse_tvr.engine.preprocess import normalize, pad_frames  # noqa: E402
from muse_tvr.engine.tokenizer import ClipTokenizer  # noqa: E402
from muse_tvr.engine.video import load_video_file, reference_indices, resize_center_crop  # noqa: E402
from muse_tvr.engine.weights import save_pretrained  # noqa: E402
from muse_tvr.kernels import causal_conv, pyramid  # noqa: E402

# The tiny preset with a two-level pyramid (3x3 + 7x7 per frame): sequence 236 instead of 1020 at 4
# frames, which makes CPU training ~4x cheaper; a 14x14 upsampled level adds nothing for one large shape.
CONFIG = TINY.replace(name="synthetic-shapes", head=HeadConfig(d_model=64, depth=2, scales=(0.5, 1.0)))


# ----- a differentiable scan with the reference's math -------------------------------------------------
class SelectiveScan(torch.autograd.Function):
    """One direction, time-major: s_t = exp(dt_t A) s_prev + x_t B_t,  y_t = s_t . C_t  (x = dt * u).

    dt, x: (L, Bt, D); A: (D, N); B, C: (L, Bt, N) -> y (L, Bt, D). The loop works on one (Bt, D, N)
    state at a time (cache-resident) and the backward walks it the other way with hand-written gradients."""

    @staticmethod
    def forward(ctx, dt, x, A, B, C, reverse: bool):
        length, bt, d = dt.shape
        states = dt.new_empty((length, bt, d, A.shape[1]))
        y = dt.new_empty((length, bt, d))
        s = dt.new_zeros((bt, d, A.shape[1]))
        for t in (range(length - 1, -1, -1) if reverse else range(length)):
            a = torch.exp(dt[t].unsqueeze(-1) * A)
            s = torch.addcmul(a * s, x[t].unsqueeze(-1), B[t].unsqueeze(1))
            states[t] = s
            y[t] = torch.bmm(s, C[t].unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(dt, x, A, B, C, states)
        ctx.reverse = reverse
        return y

    @staticmethod
    def backward(ctx, gy):
        dt, x, A, B, C, states = ctx.saved_tensors
        length, bt, d = dt.shape
        g_dt, g_x, g_B, g_C = torch.empty_like(dt), torch.empty_like(x), torch.empty_like(B), torch.empty_like(C)
        g_A = torch.zeros_like(A)
        g = dt.new_zeros((bt, d, A.shape[1]))
        zero = torch.zeros_like(g)
        order = range(length) if ctx.reverse else range(length - 1, -1, -1)
        for t in order:
            prev_t = t + 1 if ctx.reverse else t - 1
            s_prev = states[prev_t] if 0 <= prev_t < length else zero
            gyt = gy[t]
            gs = torch.addcmul(g, gyt.unsqueeze(-1), C[t].unsqueeze(1))                 # dL/ds_t
            g_C[t] = torch.bmm(gyt.unsqueeze(1), states[t]).squeeze(1)
            a = torch.exp(dt[t].unsqueeze(-1) * A)
            ga_a = gs * s_prev * a                                                      # dL/d(dt A) elementwise
            g_dt[t] = (ga_a * A).sum(-1)
            g_A += (ga_a * dt[t].unsqueeze(-1)).sum(0)
            g_x[t] = torch.bmm(gs, B[t].unsqueeze(-1)).squeeze(-1)
            g_B[t] = torch.bmm(x[t].unsqueeze(1), gs).squeeze(1)
            g = gs * a
        return g_dt, g_x, g_A, g_B, g_C, None


def _scan_one(u, delta, A, B, C, D, delta_bias, reverse):
    dt = F.softplus(delta.float() + delta_bias.float(), beta=1.0, threshold=20.0)      # (Bt, L, D)
    uf = u.float()
    tm = lambda v: v.float().transpose(0, 1).contiguous()  # noqa: E731  (Bt, L, .) -> (L, Bt, .)
    y = SelectiveScan.apply(tm(dt), tm(dt * uf), A.float(), tm(B), tm(C), reverse).transpose(0, 1)
    return y + uf * D.float()


def bidirectional_scan_train(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b,
                             delta_bias_f, delta_bias_b):
    """`bidirectional_scan_ref`'s contract and math, differentiable at a fraction of its autograd cost."""
    y_f = _scan_one(u_f, delta_f, A_f, B_f, C_f, D_f, delta_bias_f, False)
    y_b = _scan_one(u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b, True)
    return ((y_f + y_b) * F.silu(z.float())).to(u_f.dtype)


TRAIN_BACKEND = Backend("train", causal_conv.IMPLEMENTATIONS["reference"], bidirectional_scan_train,
                        pyramid.IMPLEMENTATIONS["reference"])


def check_scan() -> None:
    """The training scan equals the reference scan, values and gradients (float64)."""
    from muse_tvr.kernels.selective_scan.reference import bidirectional_scan_ref
    g = torch.Generator().manual_seed(0)
    bt, length, d, n = 2, 9, 5, 3
    args = dict(u_f=torch.randn(bt, length, d, generator=g), delta_f=torch.randn(bt, length, d, generator=g),
                B_f=torch.randn(bt, length, n, generator=g), C_f=torch.randn(bt, length, n, generator=g),
                u_b=torch.randn(bt, length, d, generator=g), delta_b=torch.randn(bt, length, d, generator=g),
                B_b=torch.randn(bt, length, n, generator=g), C_b=torch.randn(bt, length, n, generator=g),
                z=torch.randn(bt, length, d, generator=g), A_f=-torch.rand(d, n, generator=g),
                A_b=-torch.rand(d, n, generator=g), D_f=torch.randn(d, generator=g), D_b=torch.randn(d, generator=g),
                delta_bias_f=torch.randn(d, generator=g), delta_bias_b=torch.randn(d, generator=g))
    outs = []
    for fn in (bidirectional_scan_ref, bidirectional_scan_train):
        xs = {k: v.clone().requires_grad_(True) for k, v in args.items()}
        y = fn(**xs)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), {k: v.grad for k, v in xs.items()}))
    err = (outs[0][0] - outs[1][0]).abs().max().item()
    gerr = max((outs[0][1][k] - outs[1][1][k]).abs().max().item() for k in args)
    print(f"scan check: max |y diff| {err:.2e}, max |grad diff| {gerr:.2e}")
    if err > 1e-4 or gerr > 1e-3:
        raise SystemExit("training scan does not match the reference")


# ----- data --------------------------------------------------------------------------------------------
def augmented_spec(rng: np.random.Generator, cap: str) -> tuple[W.ClipSpec, dict]:
    """A clip of `cap` over the world's ranges, widened a little; plus drawing-style variations."""
    colour, shape, motion = cap.split(" ", 3)[1:]
    side = int(rng.integers(88, 273))
    fps = float(rng.choice([rng.integers(5, 31), 29.97, 23.976, 12.5])) if rng.random() < 0.15 \
        else float(rng.integers(5, 31))
    duration = float(rng.uniform(1.8, 6.5))
    frames = max(1, int(round(duration * fps)))
    radius = float(rng.uniform(0.085, 0.22)) * side
    rgb = tuple(int(v) for v in np.clip(np.array(W.COLOURS[colour]) + rng.integers(-32, 33, 3), 0, 255))
    lo = 0.0 if rng.random() < 0.2 else min(0.5 * radius, 0.25 * side)
    a = float(rng.uniform(lo, 0.28 * side))
    b = float(side - rng.uniform(lo, 0.28 * side))
    across = side / 2 + float(rng.uniform(-0.12, 0.12)) * side
    i = W.MOTIONS.index(motion)
    start, end = [((a, across), (b, across)), ((b, across), (a, across)),
                  ((across, b), (across, a)), ((across, a), (across, b))][i]
    spec = W.ClipSpec(colour, shape, motion, side, fps, frames, radius, rgb, start, end)
    style = {"square_scale": float(rng.uniform(0.7, 1.05)), "triangle_height": float(rng.uniform(1.3, 2.0))}
    return spec, style


def clip_tensor(frames_uint8: np.ndarray, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_frames(normalize(frames_uint8), max_frames)


def render_sampled(spec: W.ClipSpec, style: dict, size: int, max_frames: int, rng: np.random.Generator,
                   tmpdir: str | None) -> np.ndarray:
    """uint8 (T, size, size, 3): the frames the engine would sample, in memory or through a video file."""
    if tmpdir is not None:
        frames = W.render_frames(spec, None, **style)
        path = Path(tmpdir) / "clip.mp4"
        W.write_video(path, frames, spec.fps, codec=str(rng.choice(["libx264", "mpeg4"])))
        return load_video_file(path, size, max_frames).frames
    from PIL import Image
    idx = reference_indices(spec.frames, spec.fps, max_frames)
    raw = W.render_frames(spec, idx, **style)
    bg = int(rng.integers(0, 14)) if rng.random() < 0.3 else 0
    if bg:
        raw = np.where(raw.any(-1, keepdims=True), raw, np.uint8(bg))
    out = np.stack([np.asarray(resize_center_crop(Image.fromarray(f), size)) for f in raw])
    if rng.random() < 0.5:
        out = np.clip(out + rng.normal(0, rng.uniform(0.5, 4.0), out.shape), 0, 255).astype(np.uint8)
    return out


def build_pool(per_caption: int, seed: int, cfg: MuseConfig, file_fraction: float, log) -> tuple[np.ndarray, np.ndarray]:
    """(48, per_caption, T, S, S, 3) uint8 frames and (48, per_caption) frame counts."""
    rng = np.random.default_rng(seed)
    s, t = cfg.vision.image_size, cfg.max_frames
    pool = np.zeros((len(W.CAPTIONS), per_caption, t, s, s, 3), dtype=np.uint8)
    counts = np.zeros((len(W.CAPTIONS), per_caption), dtype=np.int64)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for j in range(per_caption):
            for c, cap in enumerate(W.CAPTIONS):
                spec, style = augmented_spec(rng, cap)
                f = render_sampled(spec, style, s, t, rng, tmp if rng.random() < file_fraction else None)
                pool[c, j, :len(f)] = f
                counts[c, j] = len(f)
            if (j + 1) % 8 == 0:
                log(f"pool: {j + 1}/{per_caption} clips per caption ({time.time() - t0:.0f} s)")
    return pool, counts


def batch_from_pool(pool, counts, rng: np.random.Generator, max_frames: int):
    """One clip of every caption: frames (48, T, 3, S, S), mask (48, T)."""
    frames, masks = [], []
    for c in range(pool.shape[0]):
        j = int(rng.integers(pool.shape[1]))
        f, m = clip_tensor(pool[c, j, :counts[c, j]], max_frames)
        frames.append(f)
        masks.append(m)
    x = torch.stack(frames)
    # Cheap on-the-fly photometric jitter (per clip gain), in normalised space around the black level.
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (x.shape[0], 1, 1, 1, 1))).float()
    black = normalize(np.zeros((1, 1, 1, 3), np.uint8))[0].view(1, 1, 3, 1, 1)
    x = black + (x - black) * gain
    return x, torch.stack(masks)


# ----- evaluation --------------------------------------------------------------------------------------
def eval_set(seed: int, cfg: MuseConfig, per_caption: int = 1):
    """Held-out clips of the world exactly as specified (no widening), rendered in memory."""
    from PIL import Image
    frames, masks, labels = [], [], []
    for i, spec in enumerate(W.clip_set(seed, per_caption)):
        idx = reference_indices(spec.frames, spec.fps, cfg.max_frames)
        raw = W.render_frames(spec, idx)
        f = np.stack([np.asarray(resize_center_crop(Image.fromarray(x), cfg.vision.image_size)) for x in raw])
        ft, m = clip_tensor(f, cfg.max_frames)
        frames.append(ft)
        masks.append(m)
        labels.append(W.CAPTIONS.index(spec.caption))
    return torch.stack(frames), torch.stack(masks), torch.tensor(labels)


@torch.no_grad()
def evaluate(model: MuseModel, ids, frames, masks, labels, backend="reference") -> dict:
    model.eval().set_backend(backend)
    text = model.encode_text(ids)
    video = torch.cat([model.encode_video(frames[i:i + 48], masks[i:i + 48]) for i in range(0, len(frames), 48)])
    sims = model.similarity(text, video)                                   # (48 captions, N clips)
    # text -> video: for each caption, is the top clip one of its clips?
    top = sims.argmax(dim=1)
    t2v = (labels[top] == torch.arange(len(ids))).float().mean().item()
    # video -> text
    v2t = (sims.argmax(dim=0) == labels).float().mean().item()
    # direction only: among the 4 captions with the clip's colour and shape
    model.train()
    return {"t2v_r1": t2v, "v2t_r1": v2t}


# ----- training ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "muse_tvr" / "models" / "synthetic-shapes"))
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--minutes", type=float, default=35.0, help="stop training after this wall time")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--per-caption", type=int, default=48, help="clips per caption in the training pool")
    p.add_argument("--file-fraction", type=float, default=0.15, help="pool share that goes through files")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: two OpenMP threads on a shared 2-core box were 8x slower)")
    p.add_argument("--check", action="store_true", help="only check the training scan against the reference")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    check_scan()
    if args.check:
        return 0
    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    torch.manual_seed(args.seed)
    cfg = CONFIG
    model = MuseModel(cfg)
    model.train()
    ids = ClipTokenizer()(list(W.CAPTIONS), cfg.max_words)
    pool, counts = build_pool(args.per_caption, args.seed, cfg, args.file_fraction, log)
    ev = eval_set(1000 + args.seed, cfg, per_caption=2)
    log(f"pool {pool.shape} ({pool.nbytes / 2**30:.2f} GiB), eval {len(ev[0])} clips; config {cfg.to_dict()['head']}")

    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (no_decay if prm.dim() < 2 or "logit_scale" in name or "A_" in name or name.endswith(".D")
         or name.endswith("D_b") else decay).append(prm)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    warmup = 100
    rng = np.random.default_rng(args.seed + 1)
    labels = torch.arange(len(W.CAPTIONS))
    best, history, step = -1.0, [], 0
    budget = args.minutes * 60
    t_train = time.time()
    while step < args.steps and time.time() - t_train < budget:
        # Cosine schedule over the planned steps, or over the time budget if that ends first.
        frac = max(step / args.steps, (time.time() - t_train) / budget)
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, mask = batch_from_pool(pool, counts, rng, cfg.max_frames)
        b, t = x.shape[:2]
        tokens = model.clip.encode_image(x.reshape(b * t, *x.shape[2:]))
        tokens = tokens.reshape(b, t, *tokens.shape[1:]).float()
        video = learn(model.pyramid, model.head, tokens, mask, TRAIN_BACKEND)
        text = model.clip.encode_text(ids).float()
        text = text / text.norm(dim=-1, keepdim=True)
        logits = model.clip.logit_scale.exp() * text @ video.t()
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, math.log(100))
        step += 1
        if step % 10 == 0 or step == 1:
            acc = (logits.argmax(1) == labels).float().mean().item()
            log(f"step {step} loss {loss.item():.4f} batch t2v acc {acc:.3f} lr {lr:.2e} "
                f"scale {model.clip.logit_scale.exp().item():.1f} ({(time.time() - t_train) / step:.2f} s/step)")
        if step % args.eval_every == 0:
            m = evaluate(model, ids, *ev)
            history.append({"step": step, "seconds": round(time.time() - t_train), **m})
            log(f"eval step {step}: {m}")
            if m["t2v_r1"] + m["v2t_r1"] >= best:
                best = m["t2v_r1"] + m["v2t_r1"]
                save(model, args, step, history, time.time() - t_train)
                log(f"saved to {args.out}")
    m = evaluate(model, ids, *ev)
    history.append({"step": step, "seconds": round(time.time() - t_train), **m})
    log(f"final step {step}: {m}")
    if m["t2v_r1"] + m["v2t_r1"] >= best:
        save(model, args, step, history, time.time() - t_train)
        log(f"saved to {args.out}")
    return 0


def save(model: MuseModel, args, step: int, history: list, seconds: float) -> None:
    model.weight_sources = {k: "trained: synthetic-shapes world (scripts/train_synthetic.py)"
                            for k in ("clip", "pyramid", "head")}
    out = save_pretrained(model, args.out)
    (Path(args.out) / "training.json").write_text(json.dumps(
        {"seed": args.seed, "steps": step, "train_seconds": round(seconds), "lr": args.lr,
         "per_caption": args.per_caption, "file_fraction": args.file_fraction, "history": history}, indent=2))
    model.train()
    return out


if __name__ == "__main__":
    sys.exit(main())
