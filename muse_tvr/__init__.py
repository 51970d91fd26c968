"""muse-tvr: an inference engine for MUSE, the multi-scale Mamba model for text-video retrieval.

    import muse_tvr
    model = muse_tvr.load_model(None, config=muse_tvr.PRESETS["tiny"])   # or a checkpoint path
    ids = muse_tvr.ClipTokenizer()(["a dog on a beach"])
    scores = model.similarity(model.encode_text(ids), model.encode_video(frames))

Subpackages: `kernels` (each op's implementations beside its plain reference, and the op contracts),
`engine` (the model, weights, video, text, retrieval), `export` (ONNX, ONNX Runtime, TensorRT), `commands`
(the CLI). Layers import downwards only: kernels <- engine <- export <- commands.
"""
from .engine.config import PRESETS, MuseConfig, get_config
from .engine.model import MuseModel
from .engine.tokenizer import ClipTokenizer
from .engine.weights import load_model, save_pretrained
from .export import ort_runner as _ort_runner  # noqa: F401  (registers the "ort" backend)

__version__ = "0.1.0"
__all__ = ["PRESETS", "MuseConfig", "get_config", "MuseModel", "ClipTokenizer", "load_model", "save_pretrained",
           "__version__"]
