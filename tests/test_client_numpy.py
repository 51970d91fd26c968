"""The client side imports without torch: tokenizer, video sampling, preprocessing and the request
helpers run in a process where `import torch` fails, and give the engine's exact ids and pixels.
Also: the engine's backend registry still offers "ort" without anyone importing muse_tvr.export."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import json, numpy as np
from muse_tvr.engine.tokenizer import ClipTokenizer
from muse_tvr.engine.video import load_video
from muse_tvr.serve.client import captions_tensor, video_tensors
ids = ClipTokenizer().ids_array(["a dog on a beach", "Two &amp; more PEOPLE"], 32)
frames, mask = video_tensors(sys.argv[1], 32, 4)
np.save(sys.argv[2], frames)
print(json.dumps({"ids": ids.tolist(), "mask": mask.tolist(), "caption": captions_tensor(["x"]).shape,
                  "modules": sorted(m for m in sys.modules if m.startswith("torch") and sys.modules[m])}))
"""


def test_client_side_needs_no_torch(tmp_path):
    from test_video import make_clip

    from muse_tvr.engine.tokenizer import ClipTokenizer
    from muse_tvr.engine.video import load_video

    clip = tmp_path / "c.mp4"
    make_clip(clip, 3.2, 25, seed=3)
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(clip), str(tmp_path / "f.npy")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["modules"] == []
    want_ids = ClipTokenizer()(["a dog on a beach", "Two &amp; more PEOPLE"], 32)
    assert torch.equal(torch.tensor(got["ids"]), want_ids)
    frames, mask = load_video(str(clip), size=32, max_frames=4).model_input(4)
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "f.npy"))[0], frames)  # bit for bit
    assert got["mask"] == [mask.tolist()] and got["caption"] == [1, 1]


def test_ort_backend_registered_without_importing_export():
    code = ("import sys; from muse_tvr.engine.backend import names; n = names(); "
            "print('ort' in n, 'muse_tvr.export.ort_runner' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]
