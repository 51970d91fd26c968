"""Recreate the pyramid weights that reference-trained MUSE checkpoints do not contain.

Why this exists
---------------
The reference code (github.com/hrtang22/MUSE, read at commit c8e44bc) keeps the three pyramid
`nn.Sequential`s in a plain Python list (`self.mamba_stages = []` in `CLIP4Clip.__init__`), so they are
never registered: never trained, never in `state_dict()`, never saved. A trained checkpoint is only
meaningful together with the exact values those modules got at construction: PyTorch's default
initialisers drawing from the global CPU generator after `torch.manual_seed(args.seed)`. We recreate
them by consuming the generator exactly as the reference does up to the pyramid, then building our
`FeaturePyramid` (whose construction order equals the reference's) and keeping its weights.

The replay (what draws from the CPU generator, in order)
--------------------------------------------------------
References are to the reference repository, commit c8e44bc; `E` = embed dim, `V*` vision, `T*` text.

 0. main_task_retrieval.py `main()` -> `set_seed_logger()` (line 132): `torch.manual_seed(seed)`. Python
    `random`, numpy and the CUDA generators are seeded too but are never read before the pyramid.
    Between this and the model nothing draws: `init_device()`, `ClipTokenizer()` (BPE file, no torch),
    `init_model()` (`torch.load` of `--init_model`, if any, only deserialises). The data loaders are
    built after `init_model()` in `main()`, so they cannot influence the pyramid.
 1. modules/modeling.py `CLIP4ClipPreTrainedModel.from_pretrained()`: `CLIP.get_config()` (module_clip.py;
    `torch.jit.load` / `torch.load` of the OpenAI archive, deserialisation only), `CrossConfig.get_config()`
    (until_config.py; reads cross_config.json; the cross weights file does not exist, logged as such in
    the training log), `PreTrainedModel.__init__` (until_module.py; stores the config). No draws.
 2. modeling.py `CLIP4Clip.__init__` line 363 -> module_clip.py `CLIP.__init__` ->
    `VisualTransformer.__init__` (lines 276-286):
      a. `conv1 = nn.Conv2d(3, Vw, Vp, stride=Vp, bias=False)`          kaiming_uniform_ (weight only)
      b. `class_embedding = scale * torch.randn(Vw)`                      normal
      c. `positional_embedding = scale * torch.randn(grid**2 + 1, Vw)`    normal
      d. `ln_pre` (LayerNorm)                                             no draw
      e. `Transformer(Vw, Vlayers, Vw // 64)`: per `ResidualAttentionBlock`, in order
           `nn.MultiheadAttention(Vw, h)`: its `out_proj` Linear(Vw, Vw) default init (weight
             kaiming_uniform_, bias uniform_), then `_reset_parameters()`: xavier_uniform_ on
             in_proj_weight (3Vw x Vw); the two biases are set to constants (no draw);
           `ln_1` no draw; `mlp.c_fc` Linear(Vw, 4Vw) default init; `mlp.c_proj` Linear(4Vw, Vw) default
           init; `ln_2` no draw.
      f. `ln_post` no draw; `proj = scale * torch.randn(Vw, E)`           normal
      (`linear_patch == '3d'` would add a Conv3d here; the released script uses 2d.)
 3. `CLIP.__init__`, text side: `Transformer(Tw, Tlayers, Tw // 64)` (same per-block draws as 2e), then
    `token_embedding = nn.Embedding(vocab, Tw)` (default init: normal_), then `positional_embedding`,
    `text_projection` (`torch.empty`), `ln_final`, `logit_scale` (`torch.ones`): no draws.
 4. `CLIP.initialize_parameters()`: normal_ on token_embedding.weight (std 0.02), positional_embedding
    (context x Tw, std 0.01); for each TEXT block (the visual blocks are not touched): in_proj_weight,
    out_proj.weight, c_fc.weight, c_proj.weight; then text_projection (Tw x E). Every draw counts even
    though `init_preweight()` later overwrites all of CLIP with the OpenAI weights.
 5. Back in `CLIP4Clip.__init__`: `.float()`, `convert_weights()` (dtype casts), `sim_header` bookkeeping:
    no draws. With `--loose_type` (set in train_msrvtt.sh, and the training log says "Test retrieval by
    loose type") no `CrossModel` and no `similarity_dense` are built; `frame_position_embeddings`,
    `transformerClip` and the LSTM belong to the seqLSTM/seqTransf headers only. The training log's list
    of parameters missing from the pretrained state (only `MS_mamba.*`) confirms no other module exists.
 6. The pyramid (modeling.py lines 415-461): for scale 0.5, 1.0, 2.0 in that order, the Sequential's
    modules in index order: [MaxPool2d], Conv2d(C,C,1), LayerNorm, GELU, Conv2d(C,C,3,pad 1), LayerNorm
    (scale 2.0 starts with ConvTranspose2d(C, C/2, 2, stride 2) and its first conv is C/2 -> C), where
    C = the text width (`ln_final` width). Only the convolutions draw (weight kaiming_uniform_, bias
    uniform_). Each Sequential is built on the CPU and only then moved with `.cuda()`.
 Afterwards (irrelevant here): four `Mamba_head`s, `CrossEn`, `self.apply(self.init_weights)` (which
 re-draws registered Linear/Embedding weights but cannot reach the unregistered pyramid), then the
 checkpoint load. Under DDP every rank seeds the same and builds the same pyramid.

How the replay is done, and why it is faithful
----------------------------------------------
Each module that draws through its own default initialiser is really constructed (`nn.Conv2d`,
`nn.Linear`, `nn.MultiheadAttention`, `nn.Embedding`) so that the initialiser is torch's own, whatever
its version does; it is dropped right after, so the replay never holds more than the largest single
tensor (the 49408 x 512 token table, ~100 MB). Explicit draws (`torch.randn`, `nn.init.normal_`) are
made on throw-away tensors of the same shape. The number of generator outputs one CPU initialiser call
consumes depends only on the element count, dtype, contiguity and the algorithm, never on the values,
the mean/std or bounds, or the tensor's identity: uniform_ takes one 32-bit output per float32 element;
normal_ on a contiguous float32 tensor of 16 or more elements (every normal draw here) takes one per
element, plus 16 when the count is not a multiple of 16 (checked on 2.14.1 against uniform_). So a fresh
tensor of the same shape stands in for a parameter that is re-initialised; the test suite checks the
replay against a construction that keeps and re-draws the real parameters. Everything runs on the CPU
in float32, under `torch.device("cpu")`, whatever default the caller set; the CPU random kernels are
serial, so the thread count does not matter.

Assumptions (each one, if false, gives different weights with no error)
----------------------------------------------------------------------
- Seed 42 (the reference's default and the released script's), the global CPU generator.
- The released configuration: `--sim_header MUSE --loose_type --linear_patch 2d`, `cut_top_layer` 0,
  the OpenAI ViT-B/32 or ViT-B/16 shapes (vocab 49408, context 77, text width 512, 12 layers).
- Default dtype float32 when the reference ran (it never changes it).
- Torch's default initialisers: `nn.Linear`/`_ConvNd` (incl. ConvTranspose2d) reset_parameters =
  kaiming_uniform_(a=sqrt(5)) + uniform_(+-1/sqrt(fan_in)) bias; `nn.Embedding` = normal_(0, 1);
  `nn.MultiheadAttention` = out_proj Linear default init, then xavier_uniform_ in_proj_weight; and the
  CPU kernels described above. To our knowledge these are unchanged from torch 1.x (the reference README
  pins 1.13.1) through 2.x, but only the versions below were run. Checked: on torch 2.14.1 and 2.13.0
  the sidecar equals, tensor for tensor, the pyramid that the reference's own
  `CLIP4Clip.from_pretrained` builds (run with the OpenAI file replaced by a zero-filled state dict of
  the right shapes, mamba_ssm/flash_attn stubbed, `.cuda()` a no-op): ViT-B/32 seeds 42 and 7 and
  ViT-B/16 seed 42 on 2.14.1, ViT-B/32 seed 42 on 2.13.0. The tests pin those checksums. torch 1.13.1
  itself was NOT run (no wheel for this Python).
- For ViT-B/16: `CLIP.get_config()` in the reference hard-codes the author's local ViT-B-32.pt path and
  uses it for "ViT-B/16" too when that file exists; on the author's machine a "ViT-B/16" run therefore
  built a ViT-B/32 CLIP. This module follows the backbone asked for.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .config import MuseConfig, get_config
from .gallery import atomic_write_bytes
from .pyramid import FeaturePyramid

FORMAT_TAG = "muse-tvr/pyramid-sidecar/v1"
REFERENCE_COMMIT = "c8e44bc88188393a69ec5b1bff3f29416bfc0179"
REFERENCE_SCALES = (0.5, 1.0, 2.0)  # hard-coded in the reference's MUSE branch
# Torch versions on which the sidecar checksum was compared (see the module docstring).
CHECKED_TORCH_VERSIONS = ("2.14.1", "2.13.0")

CAVEATS = (
    "Reproduces the reference constructor's draws only for: seed as given (reference default 42), "
    "--sim_header MUSE with --loose_type and --linear_patch 2d (the released train_msrvtt.sh), "
    "CPU generator, float32.",
    "Assumes torch's default initialisers (Linear/Conv kaiming_uniform_, Embedding normal_, "
    "MultiheadAttention xavier_uniform_) and CPU random kernels as in torch 1.x-2.x; checked on torch "
    + ", ".join(CHECKED_TORCH_VERSIONS) + "; the reference pins 1.13.1, which was not run.",
    "ViT-B/16: the reference's CLIP.get_config() loads the author's hard-coded ViT-B-32.pt when it "
    "exists, so the author's own 'ViT-B/16' runs may have built a ViT-B/32 CLIP (then use ViT-B/32).",
)


@dataclass(frozen=True)
class ReplayStep:
    """One generator-consuming action of the reference constructor, as replayed."""

    where: str  # reference file and function
    what: str  # the initialiser and the shape


def _check_reference_config(config: MuseConfig) -> None:
    if tuple(config.head.scales) != REFERENCE_SCALES:
        raise ValueError(f"the reference builds the pyramid for scales {REFERENCE_SCALES} only; "
                         f"config {config.name!r} has {tuple(config.head.scales)}")
    if config.head.d_model != config.text.width:
        # The reference sizes the pyramid by the text transformer width (ln_final), not the joint dim.
        raise ValueError(f"the reference pyramid width is the CLIP text width ({config.text.width}), "
                         f"but config {config.name!r} has head width {config.head.d_model}")
    for width in (config.vision.width, config.text.width):
        if width % 64:
            # The reference derives heads as width // 64; MultiheadAttention needs a positive divisor.
            raise ValueError(f"CLIP width {width} is not a multiple of 64, as the reference assumes")


def _residual_block_draws(width: int) -> list[tuple[str, Callable[[], Any]]]:
    """Draws of one CLIP ResidualAttentionBlock, in construction order (module_clip.py)."""
    heads = width // 64
    return [
        (f"nn.MultiheadAttention({width}, {heads}): out_proj Linear default init, "
         f"xavier_uniform_ in_proj_weight", lambda: nn.MultiheadAttention(width, heads)),
        (f"nn.Linear({width}, {4 * width}) default init", lambda: nn.Linear(width, 4 * width)),
        (f"nn.Linear({4 * width}, {width}) default init", lambda: nn.Linear(4 * width, width)),
    ]


def _normal(shape: tuple[int, ...], std: float) -> Callable[[], Any]:
    # The re-initialised parameters are gone by now; a fresh tensor of the same shape consumes the same.
    return lambda: nn.init.normal_(torch.empty(shape), std=std)


def _randn(shape: tuple[int, ...]) -> Callable[[], Any]:
    return lambda: torch.randn(shape)


def reference_draw_plan(config: MuseConfig) -> list[tuple[ReplayStep, Callable[[], Any]]]:
    """The reference constructor's generator-consuming actions before the pyramid, in order.

    Each entry pairs a description with a zero-argument callable that performs the same draws. Building
    the plan draws nothing; `replay_reference_generator` runs it.
    """
    _check_reference_config(config)
    v, t, embed_dim = config.vision, config.text, config.text.output_dim
    vis = "module_clip.py VisualTransformer.__init__"
    txt = "module_clip.py CLIP.__init__ (text Transformer)"
    init = "module_clip.py CLIP.initialize_parameters"
    plan: list[tuple[ReplayStep, Callable[[], Any]]] = []

    def add(where: str, what: str, fn: Callable[[], Any]) -> None:
        plan.append((ReplayStep(where, what), fn))

    vw, tw = v.width, t.width
    add(vis, f"nn.Conv2d(3, {vw}, {v.patch_size}, stride={v.patch_size}, bias=False) default init",
        lambda: nn.Conv2d(3, vw, kernel_size=v.patch_size, stride=v.patch_size, bias=False))
    add(vis, f"torch.randn({vw}) class_embedding", _randn((vw,)))
    add(vis, f"torch.randn({v.grid ** 2 + 1}, {vw}) positional_embedding", _randn((v.grid ** 2 + 1, vw)))
    for i in range(v.layers):
        for what, fn in _residual_block_draws(vw):
            add(f"{vis} (visual block {i})", what, fn)
    add(vis, f"torch.randn({vw}, {embed_dim}) proj", _randn((vw, embed_dim)))
    for i in range(t.layers):
        for what, fn in _residual_block_draws(tw):
            add(f"{txt} (text block {i})", what, fn)
    add("module_clip.py CLIP.__init__", f"nn.Embedding({t.vocab_size}, {tw}) default init (normal_)",
        lambda: nn.Embedding(t.vocab_size, tw))
    add(init, f"normal_(std=0.02) token_embedding {t.vocab_size}x{tw}", _normal((t.vocab_size, tw), 0.02))
    add(init, f"normal_(std=0.01) positional_embedding {t.context_length}x{tw}",
        _normal((t.context_length, tw), 0.01))
    proj_std = tw ** -0.5 * (2 * t.layers) ** -0.5
    attn_std = tw ** -0.5
    fc_std = (2 * tw) ** -0.5
    for i in range(t.layers):
        where = f"{init} (text block {i})"
        add(where, f"normal_ attn.in_proj_weight {3 * tw}x{tw}", _normal((3 * tw, tw), attn_std))
        add(where, f"normal_ attn.out_proj.weight {tw}x{tw}", _normal((tw, tw), proj_std))
        add(where, f"normal_ mlp.c_fc.weight {4 * tw}x{tw}", _normal((4 * tw, tw), fc_std))
        add(where, f"normal_ mlp.c_proj.weight {tw}x{4 * tw}", _normal((tw, 4 * tw), proj_std))
    add(init, f"normal_ text_projection {tw}x{embed_dim}", _normal((tw, embed_dim), tw ** -0.5))
    return plan


@contextmanager
def _float32_cpu() -> Iterator[None]:
    """Run a block with float32 as default dtype and the CPU as default device, restoring both after."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.device("cpu"):
            yield
    finally:
        torch.set_default_dtype(dtype)


def replay_reference_generator(config: MuseConfig, seed: int = 42) -> list[ReplayStep]:
    """Seed the global CPU generator and consume it as the reference constructor does before the pyramid.

    On return the global CPU generator is in the state the reference's was when its pyramid
    construction began (the caller's previous generator state is deliberately not restored: that is
    the point). Returns the steps performed, in order.
    """
    plan = reference_draw_plan(config)
    with _float32_cpu(), torch.no_grad():
        torch.manual_seed(seed)
        for _, fn in plan:
            fn()
    return [step for step, _ in plan]


def make_pyramid_sidecar(config: MuseConfig, seed: int = 42) -> dict[str, torch.Tensor]:
    """The pyramid weights a reference run with this backbone and seed constructed (keys `mamba_stages.*`).

    The caller's global generator state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        replay_reference_generator(config, seed)
        with _float32_cpu():
            pyramid = FeaturePyramid(config.head, config.vision)
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in pyramid.state_dict().items()}


def sidecar_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys, each with its dtype, shape and raw little-endian bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_sidecar(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                 meta: Mapping[str, Any] | None = None) -> str:
    """Write `state` as safetensors with metadata, atomically (a reader never sees half a file).

    Metadata always holds the format tag, torch version and checksum; `meta` (e.g. seed, backbone) is
    added with values turned into strings. Returns the checksum.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    checksum = sidecar_checksum(tensors)
    metadata = {str(k): str(v) for k, v in (meta or {}).items()}
    metadata.update(format=FORMAT_TAG, torch_version=torch.__version__, sha256=checksum)
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))
    return checksum


def load_sidecar(path: str | os.PathLike[str], config: MuseConfig | None = None) -> dict[str, torch.Tensor]:
    """Read a pyramid sidecar and check it against `config` (default: the backbone in its metadata).

    Raises FileNotFoundError for a missing file and ValueError for an unreadable file, a foreign format,
    a backbone mismatch, a checksum mismatch, or keys that are missing, unexpected, mis-shaped or not
    float32 (all listed in one message). Returns float32 CPU tensors keyed `mamba_stages.*`.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pyramid sidecar not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        raise ValueError(f"{path} is not a readable safetensors pyramid sidecar "
                         f"(corrupt or truncated?): {e}") from e
    fmt = meta.get("format")
    if fmt is not None and fmt != FORMAT_TAG:
        raise ValueError(f"{path}: sidecar format {fmt!r} is not {FORMAT_TAG!r}")
    backbone = meta.get("backbone")
    if config is None:
        if backbone is None:
            raise ValueError(f"{path}: the sidecar names no backbone; pass the model config to check it")
        config = get_config(backbone)
    elif backbone is not None and backbone != config.name:
        # B/32 and B/16 pyramids have identical shapes but different values: refuse silently wrong weights.
        raise ValueError(f"{path}: sidecar was made for backbone {backbone!r}, not {config.name!r}")
    with torch.device("meta"):  # the expected shapes, without memory or draws
        expected = {k: tuple(v.shape) for k, v in FeaturePyramid(config.head, config.vision).state_dict().items()}
    both = set(expected) & set(state)
    problems = [f"{title}: {sep.join(items)}" for title, sep, items in (
        ("missing keys", ", ", sorted(set(expected) - set(state))),
        ("unexpected keys", ", ", sorted(set(state) - set(expected))),
        ("wrong shapes", "; ", sorted(f"{k}: {tuple(state[k].shape)} (expected {expected[k]})"
                                      for k in both if tuple(state[k].shape) != expected[k])),
        ("not float32", "; ", sorted(f"{k}: {state[k].dtype}" for k in both if state[k].dtype != torch.float32)),
    ) if items]
    if problems:
        raise ValueError(f"{path} does not match the {config.name} pyramid: " + " | ".join(problems))
    stored = meta.get("sha256")
    if stored is None:
        # Without it a damaged or edited file would load silently; every sidecar this engine writes has it.
        raise ValueError(f"{path}: the sidecar's metadata has no sha256, so its data cannot be checked; "
                         f"recreate it with `muse-tvr pyramid-sidecar`")
    if stored != sidecar_checksum(state):
        raise ValueError(f"{path}: tensor data does not match the checksum in its metadata (corrupt file)")
    return state


def parameter_count(state: Mapping[str, torch.Tensor]) -> int:
    return sum(math.prod(t.shape) for t in state.values())
