"""Reading and writing weights: OpenAI / open_clip CLIP, reference MUSE checkpoints, the engine's own format.

Formats (docs/model.md section 7):
- OpenAI CLIP: the TorchScript archive (`ViT-B-32.pt`) or a plain state dict; open_clip's state dict of
  the same architecture has the same key names.
- Reference MUSE training checkpoints `pytorch_model.bin.N`: a plain pickled dict with `clip.*` and
  `MS_mamba.*` keys. The pyramid is NOT in them; it comes from a sidecar file (`mamba_stages.*` keys,
  see `muse_tvr.engine.sidecar`).
- The engine's own format: a directory with `model.safetensors` (reference key names, pyramid
  included) and `config.json`.
Pickles are read with `weights_only=True`. Every mismatch is reported at once, in one error.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .config import PRESETS, HeadConfig, MuseConfig, TextConfig, VisionConfig
from .model import REFERENCE_PREFIXES, MuseModel

# Keys in OpenAI's archive that are hyper-parameters, not weights (the reference deletes them too).
_CLIP_META_KEYS = ("input_resolution", "context_length", "vocab_size")
FORMAT_TAG = "muse-tvr/1"
# Modules the reference CLIP4Clip class registers for other similarity heads or for training only.
# They can sit in a MUSE checkpoint but take no part in MUSE inference.
_REFERENCE_UNUSED = ("cross.", "similarity_dense.", "frame_position_embeddings.", "transformerClip.",
                     "global_mat_weight", "word_logit_weight", "frame_logit_weight", "local_mat_weight",
                     "frame_mat_weight", "word_mat_weight", "frame_mat_weight2", "word_mat_weight2",
                     "lstm_visual.", "loss_fct.")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: lists every missing, unexpected and mis-shaped key."""


# ----- reading files ----------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, a TorchScript archive, or a pickled (state) dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        elif _is_torchscript(path):
            sd = read_torchscript_tensors(path)
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (FileNotFoundError, CheckpointError):
        raise
    except Exception as e:  # torch/zip/safetensors raise many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated, corrupt or not a "
                              f"checkpoint ({type(e).__name__}: {e})") from e
    return _unwrap(sd, path)


class _ScriptObject:
    """Stands in for a TorchScript class instance: keeps the pickled state, runs none of its code.
    `weights` names its parameters and buffers (None when the archive's code does not say)."""

    weights: frozenset | None = None

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state


_SCRIPT_HELPERS = {  # torch.jit._pickle helpers that only tag or wrap a value already in the pickle
    "restore_type_tag": lambda value, _tag: value, "build_intlist": list, "build_doublelist": list,
    "build_boollist": list, "build_tensorlist": list,
}


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's data.pkl building only tensors from the zip's data records.
    Any global other than tensor rebuilding, storages and OrderedDict is refused."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(io.BytesIO(data))
        self._zf, self._prefix, self._path = zf, prefix, path

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks: data
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            with warnings.catch_warnings():  # TypedStorage classes are deprecated; only their dtype is used
                warnings.simplefilter("ignore")
                return getattr(torch, name).dtype
        if module == "torch.jit._pickle" and name in _SCRIPT_HELPERS:
            return _SCRIPT_HELPERS[name]
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {"weights": self._declared_weights(module, name)})
        raise CheckpointError(f"{self._path}: the TorchScript archive refers to {module}.{name}, which a "
                              f"weights file does not need; refusing to load it")

    def _declared_weights(self, module: str, name: str) -> frozenset | None:
        """Parameter and buffer names from the class's `__parameters__`/`__buffers__` lines in the
        archive's code/ text: read as text, never compiled. Tensor attributes that are neither (OpenAI's
        `attn_mask`) are left out, as torch.jit's state_dict leaves them out."""
        source = f"{self._prefix}/code/{module.replace('.', '/')}.py"
        try:
            text = self._zf.read(source).decode("utf-8", "replace")
        except KeyError:
            return None
        m = re.search(rf"^class {re.escape(name)}\(Module\):\n  __parameters__ = \[(.*?)\]\n"
                      rf"  __buffers__ = \[(.*?)\]", text, re.M)
        if m is None:
            return None
        return frozenset(re.findall(r'"([^"]+)"', m.group(1) + m.group(2)))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unexpected record reference {pid!r} in the archive")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self._path}: data record {key} has no tensor type")
        raw = self._zf.read(f"{self._prefix}/data/{key}")
        if len(raw) < numel * torch.empty((), dtype=dtype).element_size():
            raise CheckpointError(f"{self._path}: data record {key} is shorter than its tensor")
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)[:numel]


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _collect_tensors(obj, prefix: str, out: dict, seen: set) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    declared = None
    if isinstance(obj, _ScriptObject):
        declared, obj = obj.weights, obj.state
    if not isinstance(obj, dict):
        return
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, torch.Tensor):
            if declared is None or key in declared:
                out[prefix + key] = value
        elif isinstance(value, (_ScriptObject, dict)):
            _collect_tensors(value, f"{prefix}{key}.", out, seen)


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The named tensors of a TorchScript archive (OpenAI's CLIP `.pt`), read from its data.pkl and data
    records without `torch.jit.load`: loading a TorchScript module runs code stored in the file (a
    scripted `__setstate__`), so none of the archive's code is compiled or run here."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not names:
            raise CheckpointError(f"{path}: TorchScript archive without data.pkl")
        prefix = names[0].split("/", 1)[0]
        root = _ArchiveUnpickler(zf.read(names[0]), zf, prefix, path).load()
    out: dict[str, torch.Tensor] = {}
    _collect_tensors(root, "", out, set())
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1].startswith("constants.pkl") for n in zf.namelist())


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path} holds no tensors")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# ----- inferring the architecture ---------------------------------------------------------------
def _count_indices(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def infer_config(sd: dict[str, torch.Tensor], clip_prefix: str = "") -> MuseConfig:
    """Architecture from CLIP key shapes (and MS_mamba shapes when present); returns a preset if equal."""
    p = clip_prefix
    try:
        conv1 = sd[f"{p}visual.conv1.weight"]
        vwidth, patch = conv1.shape[0], conv1.shape[-1]
        grid = round((sd[f"{p}visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = VisionConfig(image_size=grid * patch, patch_size=patch, width=vwidth,
                              layers=_count_indices(sd, f"{p}visual.transformer.resblocks."),
                              heads=vwidth // 64, output_dim=sd[f"{p}visual.proj"].shape[1])
        twidth = sd[f"{p}ln_final.weight"].shape[0]
        text = TextConfig(vocab_size=sd[f"{p}token_embedding.weight"].shape[0],
                          context_length=sd[f"{p}positional_embedding"].shape[0], width=twidth,
                          layers=_count_indices(sd, f"{p}transformer.resblocks."), heads=twidth // 64,
                          output_dim=sd[f"{p}text_projection"].shape[1])
    except KeyError as e:
        raise CheckpointError(f"not a CLIP ViT checkpoint: missing key {e.args[0]!r}") from None
    head = HeadConfig(d_model=vision.output_dim)
    depth = _count_indices(sd, "MS_mamba.")
    if depth:
        m = "MS_mamba.0.mamba."
        d_inner = sd[m + "in_proj.weight"].shape[0] // 2
        head = HeadConfig(d_model=vision.output_dim, depth=depth, d_state=sd[m + "A_log"].shape[1],
                          d_conv=sd[m + "conv1d.weight"].shape[-1], expand=d_inner // vision.output_dim,
                          dt_rank=sd[m + "dt_proj.weight"].shape[1])
    for preset in PRESETS.values():
        if preset.vision == vision and preset.text == text and _same_head(preset.head, head):
            return preset
    return MuseConfig(name=f"ViT-custom/{patch}", vision=vision, text=text, head=head)


def _same_head(a: HeadConfig, b: HeadConfig) -> bool:
    return (a.d_model, a.depth, a.d_state, a.d_conv, a.expand, a.rank) == \
           (b.d_model, b.depth, b.d_state, b.d_conv, b.expand, b.rank)


# ----- loading into a model -------------------------------------------------------------------------
def _rename(key: str, prefixes: dict[str, str]) -> str | None:
    """`key` with its first matching old prefix replaced by the new one (None when none matches)."""
    return next((new + key[len(old):] for old, new in prefixes.items() if key.startswith(old)), None)


def model_to_reference_names(model: MuseModel) -> dict[str, torch.Tensor]:
    """The model's state dict under the reference checkpoint's names (clip.*, MS_mamba.*, mamba_stages.*)."""
    back = {v: k for k, v in REFERENCE_PREFIXES.items()}
    return {ref: v for k, v in model.state_dict().items() if (ref := _rename(k, back)) is not None}


def load_reference_names(model: MuseModel, sd: dict[str, torch.Tensor], parts: tuple[str, ...]) -> None:
    """Copy tensors named like the reference into `model` for the listed parts ("clip", "head",
    "pyramid"), checking every key and shape first so that nothing is half-loaded on error."""
    prefix_of = {"clip": "clip.", "head": "MS_mamba.", "pyramid": "mamba_stages."}
    expected = {k: v for k, v in model_to_reference_names(model).items()
                if any(k.startswith(prefix_of[p]) for p in parts)}
    given = {k: v for k, v in sd.items() if any(k.startswith(prefix_of[p]) for p in parts)}
    stray = [k for k in sd if not any(k.startswith(pre) for pre in prefix_of.values())]
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected)) + sorted(stray)
    mismatched = sorted(f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(given) & set(expected) if given[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_report(missing, unexpected, mismatched))
    ours = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, v in given.items():
            target = ours[_rename(k, REFERENCE_PREFIXES)]
            target.copy_(v.to(target.dtype))
    for p in parts:
        model.weight_sources[p] = "loaded"


def _mismatch_report(missing, unexpected, mismatched, limit: int = 20) -> str:
    lines = ["checkpoint does not match the model:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", mismatched)):
        if items:
            lines.append(f"  {len(items)} {title}:")
            lines += [f"    {x}" for x in items[:limit]]
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


def clip_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenAI/open_clip CLIP state dict (or one with the reference's `clip.` prefix) with
    reference names (`clip.*`), hyper-parameter entries dropped."""
    if any(k.startswith("clip.") for k in sd):
        sd = {k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}
    return {"clip." + k: v for k, v in sd.items() if k not in _CLIP_META_KEYS and k != "attn_mask"}


def load_clip(path_or_sd, config: MuseConfig | None = None) -> MuseModel:
    """A MUSE model whose CLIP towers hold the given CLIP weights; pyramid and head stay RANDOM."""
    sd = read_state_dict(path_or_sd) if not isinstance(path_or_sd, dict) else path_or_sd
    sd = clip_state_dict(sd)
    model = MuseModel(config or infer_config(sd, "clip."))
    load_reference_names(model, sd, ("clip",))
    model.weight_sources["clip"] = "CLIP checkpoint"
    return model


def load_reference_checkpoint(path_or_sd, sidecar=None, config: MuseConfig | None = None) -> MuseModel:
    """A reference MUSE training checkpoint (`clip.*` + `MS_mamba.*`) plus its pyramid sidecar.

    Without a sidecar the pyramid keeps random values, which is NOT the model that was trained: a
    warning says so and `model.weight_sources["pyramid"]` stays "random".
    """
    sd = read_state_dict(path_or_sd) if not isinstance(path_or_sd, dict) else dict(path_or_sd)
    if not any(k.startswith("MS_mamba.") for k in sd):
        raise CheckpointError("not a MUSE checkpoint: no 'MS_mamba.*' keys (is this a plain CLIP file? "
                              "use load_clip)")
    sd = {k: v for k, v in sd.items()
          if k.split(".")[-1] not in _CLIP_META_KEYS and not k.startswith(_REFERENCE_UNUSED)}
    config = config or infer_config(sd, "clip.")
    model = MuseModel(config)
    parts = ("clip", "head")
    if sidecar is not None:
        from .sidecar import load_sidecar  # checks backbone, keys, shapes and checksum of the file
        side = load_sidecar(sidecar, config) if not isinstance(sidecar, dict) else sidecar
        sd.update({k: v for k, v in side.items() if k.startswith("mamba_stages.")})
        parts += ("pyramid",)
    elif any(k.startswith("mamba_stages.") for k in sd):
        parts += ("pyramid",)
    else:
        warnings.warn(
            "reference MUSE checkpoint loaded WITHOUT a pyramid sidecar: the reference never saved its "
            "pyramid, so this model uses random pyramid weights and its scores are meaningless. Create the "
            "sidecar with `muse-tvr pyramid-sidecar --seed 42 --out pyramid.safetensors` and pass it.",
            UserWarning, stacklevel=2)
    load_reference_names(model, sd, parts)
    return model


def save_pretrained(model: MuseModel, directory: str | os.PathLike) -> Path:
    """The engine's own format: DIR/model.safetensors (reference names, fp32 as stored) + DIR/config.json."""
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_to_reference_names(model).items()}
    tmp = directory / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": FORMAT_TAG})
    # safetensors creates files owner-only, which would hide shared weights from the rest of a group.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, directory / "model.safetensors")
    meta = {"format": FORMAT_TAG, "config": model.config.to_dict(), "weight_sources": model.weight_sources}
    (directory / "config.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_pretrained(directory: str | os.PathLike) -> MuseModel:
    """Inverse of `save_pretrained`; every key and shape is checked."""
    directory = Path(directory)
    cfg_path, w_path = directory / "config.json", directory / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: a muse-tvr model directory holds config.json and "
                                    f"model.safetensors")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{cfg_path}: format {meta.get('format')!r}, expected {FORMAT_TAG!r}")
    model = MuseModel(MuseConfig.from_dict(meta["config"]))
    load_reference_names(model, read_state_dict(w_path), ("clip", "head", "pyramid"))
    model.weight_sources = dict(meta.get("weight_sources", model.weight_sources))
    return model


# Models shipped inside the package (muse_tvr/models/NAME, save_pretrained format), loadable by name.
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED_MODELS = ("synthetic-shapes",)


def shipped_model(name: str | os.PathLike) -> Path | None:
    """The directory of the shipped model called `name`, or None when `name` is not one (or an existing
    path of that name shadows it)."""
    name = os.fspath(name)
    if name not in SHIPPED_MODELS or os.path.exists(name):
        return None
    return SHIPPED_MODELS_DIR / name


def load_model(path: str | os.PathLike | None, sidecar=None, config: MuseConfig | None = None) -> MuseModel:
    """One entry for the CLI: a shipped model's name ("synthetic-shapes"), a model directory, a reference
    checkpoint (+ sidecar), a CLIP file, or None for a randomly initialised model of `config` (default
    ViT-B/32)."""
    # A sidecar only completes a reference checkpoint; anywhere else it would be silently unused.
    if path is None:
        if sidecar is not None:
            raise ValueError(f"--sidecar {sidecar} needs --model with a reference MUSE checkpoint; without "
                             f"--model the weights are random and the sidecar would be ignored")
        return MuseModel(config or PRESETS["ViT-B/32"])
    path = shipped_model(path) or Path(path)
    if path.is_dir():
        if sidecar is not None:
            raise ValueError(f"--sidecar {sidecar} does not apply to the model directory {path} (it holds "
                             f"its pyramid already): drop --sidecar")
        return load_pretrained(path)
    sd = read_state_dict(path)
    if any(k.startswith("MS_mamba.") for k in sd):
        return load_reference_checkpoint(sd, sidecar, config)
    if sidecar is not None:
        raise ValueError(f"--sidecar {sidecar} does not apply to {path}, a CLIP checkpoint without a MUSE "
                         f"head: drop --sidecar or pass a reference MUSE checkpoint")
    return load_clip(sd, config)
