"""The C++ side, built with the documented command (make -C cpp): the op library's scan kernel against the
reference at awkward shapes, and the example program end to end with good and bad inputs."""
import subprocess

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from muse_tvr.kernels.contracts import BI_SELECTIVE_SCAN as C
from muse_tvr.export.onnx_export import example_inputs
from muse_tvr.kernels.selective_scan import bidirectional_scan_ref
from onnx_helpers import built_cpp, exported, tiny_model


def _single_node_model(elem):
    ins = [helper.make_tensor_value_info(t.name, elem if t.type_var == "T" else TensorProto.FLOAT, None)
           for t in C.inputs]
    node = helper.make_node(C.name, [t.name for t in C.inputs], ["y"], domain=C.domain, **C.node_attributes())
    graph = helper.make_graph([node], "scan", ins, [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                   helper.make_opsetid(C.domain, C.version)]).SerializeToString()


@pytest.mark.parametrize("b,length,d,n,dtype", [(2, 37, 70, 16, "float32"), (1, 50, 33, 5, "float32"),
                                                (3, 1, 16, 16, "float32"), (2, 29, 40, 16, "float16")],
                         ids=lambda v: str(v))
def test_scan_kernel_matches_reference(b, length, d, n, dtype):
    import onnxruntime as ort

    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    td = getattr(torch, dtype)
    act = [r(b, length, d), r(b, length, d) * 2 - 1, r(b, length, n), r(b, length, n), r(b, length, d),
           r(b, length, d) * 2 - 1, r(b, length, n), r(b, length, n), r(b, length, d)]
    act[1][0, 0, 0] = 30.0  # softplus identity branch
    par = [-torch.rand(d, n, generator=g) * 5 - 0.01, -torch.rand(d, n, generator=g) * 5 - 0.01, r(d), r(d),
           r(d) * 0.5, r(d) * 0.5]
    x = [a.to(td) for a in act] + par
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(built_cpp() / "libmuse_ort_ops.so"))
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
    sess = ort.InferenceSession(_single_node_model(elem), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {t.name: v.numpy() for t, v in zip(C.inputs, x)})[0]
    ref = bidirectional_scan_ref(*x).float().numpy()
    scale = np.abs(ref).max()
    tol = 2e-6 * scale + 1e-5 if dtype == "float32" else 2e-3 * scale
    np.testing.assert_allclose(out.astype(np.float32), ref, atol=tol, rtol=0)


def test_scan_kernel_rejects_bad_shapes():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(built_cpp() / "libmuse_ort_ops.so"))
    sess = ort.InferenceSession(_single_node_model(TensorProto.FLOAT), so, providers=["CPUExecutionProvider"])
    feed = {t.name: np.zeros((1, 4, 8) if t.type_var == "T" and t.shape.endswith("D)") else
                             (1, 4, 16) if t.type_var == "T" else (8, 16) if t.name.startswith("A") else (8,),
                             np.float32) for t in C.inputs}
    sess.run(None, feed)
    feed["C_b"] = np.zeros((1, 4, 15), np.float32)
    with pytest.raises(Exception, match="C_b must have shape \\(1, 4, 16\\), got \\(1, 4, 15\\)"):
        sess.run(None, feed)


def _encode(build, model, *args):
    return subprocess.run([str(build / "muse_encode"), str(model), "--ops", str(build / "libmuse_ort_ops.so"),
                           *args], capture_output=True, text=True, timeout=120)


def test_cpp_example_encodes_video_like_pytorch(tmp_path):
    build = built_cpp()
    model = exported("video")["plugin-nofunc"].path
    m = tiny_model()
    inputs = example_inputs(m.config, "video", torch.float32, batch=2, frames=3, seed=3)
    np.save(tmp_path / "frames.npy", inputs["frames"].numpy())
    np.save(tmp_path / "mask.npy", inputs["mask"].numpy())
    r = _encode(build, model, "--input", f"frames={tmp_path / 'frames.npy'}", "--input",
                f"mask={tmp_path / 'mask.npy'}", "--out", str(tmp_path / "emb.npy"))
    assert r.returncode == 0, r.stderr
    emb = np.load(tmp_path / "emb.npy")
    ref = m.encode_video(inputs["frames"], inputs["mask"]).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_cpp_example_reports_bad_input(tmp_path):
    build = built_cpp()
    model = exported("video")["plugin-nofunc"].path
    np.save(tmp_path / "mask.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "frames64.npy", np.zeros((2, 3, 3, 224, 224), np.float64))
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 3, 32, 32), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    cases = [
        (["--input", f"frame={tmp_path / 'mask.npy'}"], "no input 'frame'; its inputs are: frames, mask"),
        (["--input", f"mask={tmp_path / 'mask.npy'}"], "missing input 'frames'"),
        (["--input", f"frames={tmp_path / 'small.npy'}", "--input", f"mask={tmp_path / 'mask.npy'}"],
         "must have shape (?, ?, 3, 224, 224)"),
        (["--input", f"frames={tmp_path / 'frames64.npy'}", "--input", f"mask={tmp_path / 'mask.npy'}"],
         "unsupported dtype '<f8'"),
        (["--input", f"frames={tmp_path / 'junk.npy'}", "--input", f"mask={tmp_path / 'mask.npy'}"],
         "is not a .npy file"),
        (["--input", f"frames={tmp_path / 'nope.npy'}", "--input", f"mask={tmp_path / 'mask.npy'}"],
         "cannot open input file"),
    ]
    for args, message in cases:
        r = _encode(build, model, *args, "--out", str(tmp_path / "o.npy"))
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (message, r.stderr)


def test_cpp_example_refuses_empty_masks_and_failed_writes(tmp_path):
    """Empty batches, non-0/1 masks and mismatched mask shapes are usage errors (not a SIGFPE or ORT
    internals); a write that fails (full disk) exits non-zero and leaves no file under the output name."""
    build = built_cpp()
    model = exported("video")["portable"].path
    frames = np.zeros((2, 3, 3, 224, 224), np.float32)
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 3, 224, 224), np.float32))
    np.save(tmp_path / "empty_mask.npy", np.ones((0, 3), np.float32))
    np.save(tmp_path / "mask.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "half.npy", np.full((2, 3), 0.5, np.float32))
    np.save(tmp_path / "nan.npy", np.full((2, 3), np.nan, np.float32))
    np.save(tmp_path / "short.npy", np.ones((2, 2), np.float32))
    cases = [("empty.npy", "empty_mask.npy", "is empty"), ("frames.npy", "half.npy", "must be 0 or 1"),
             ("frames.npy", "nan.npy", "must be 0 or 1"), ("frames.npy", "short.npy", "must be (B, T)")]
    for f, m, message in cases:
        r = _encode(build, model, "--input", f"frames={tmp_path / f}", "--input", f"mask={tmp_path / m}",
                    "--out", str(tmp_path / "o.npy"))
        assert r.returncode == 2 and message in r.stderr, (f, m, r.returncode, r.stderr)
    # a full disk: every write fails (file-size limit 0, SIGXFSZ ignored so write() returns EFBIG)
    out = tmp_path / "full.npy"
    r = subprocess.run(["bash", "-c", f"trap '' XFSZ; ulimit -f 0; exec {build / 'muse_encode'} {model} "
                        f"--ops {build / 'libmuse_ort_ops.so'} --input frames={tmp_path / 'frames.npy'} "
                        f"--input mask={tmp_path / 'mask.npy'} --out {out}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "failed" in r.stderr and "wrote" not in r.stderr, r.stderr
    assert not out.exists() and not list(tmp_path.glob("full.npy.tmp*"))
    r = _encode(build, model, "--input", f"frames={tmp_path / 'frames.npy'}", "--input",
                f"mask={tmp_path / 'mask.npy'}", "--out", "/dev/null")
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stderr
    out = tmp_path / "ro" / "emb.npy"
    out.parent.mkdir()
    (out.parent / "emb.npy.tmp-muse_encode").mkdir()  # the temporary cannot be created
    r = _encode(build, model, "--input", f"frames={tmp_path / 'frames.npy'}", "--input",
                f"mask={tmp_path / 'mask.npy'}", "--out", str(out))
    assert r.returncode == 1 and "cannot write" in r.stderr and not out.exists(), r.stderr


def test_cpp_npy_reader_checks_sizes_before_allocating(tmp_path):
    """A 100-byte file whose header claims 4.7 GB is refused at once, without allocating it."""
    import resource

    build = built_cpp()
    model = exported("video")["plugin-nofunc"].path
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (4096, 3, 3, 224, 224), }"
    header += b" " * (117 - len(header)) + b"\n"
    (tmp_path / "forged.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    np.save(tmp_path / "mask.npy", np.ones((2, 3), np.float32))
    r = subprocess.run(["bash", "-c", f"ulimit -v 4000000; exec {build / 'muse_encode'} {model} --ops "
                        f"{build / 'libmuse_ort_ops.so'} --input frames={tmp_path / 'forged.npy'} "
                        f"--input mask={tmp_path / 'mask.npy'} --out {tmp_path / 'o.npy'}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs" in r.stderr and "the file has 0" in r.stderr, r.stderr
    del resource


@pytest.mark.parametrize("route, variant", [("portable", "portable"), ("oplib", "plugin-nofunc")])
def test_ort_model_refuses_empty_batches_and_bad_masks(route, variant):
    from muse_tvr.export.ort_runner import OrtModel

    m = OrtModel(exported("video")[variant].path, route=route)
    frames = np.zeros((1, 3, 3, 224, 224), np.float32)
    with pytest.raises(ValueError, match="'frames' is empty"):
        m.run(frames=frames[:0], mask=np.ones((0, 3), np.float32))
    with pytest.raises(ValueError, match="must hold only 0"):
        m.run(frames=frames, mask=np.full((1, 3), 0.5, np.float32))
    with pytest.raises(ValueError, match="must hold only 0"):
        m.run(frames=frames, mask=np.full((1, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"must have shape \(B, T\)"):
        m.run(frames=frames, mask=np.ones((1, 2), np.float32))
    assert m.run(frames=frames, mask=np.ones((1, 3), np.float32))["embedding"].shape[0] == 1


def _threads_during_scan(intra_op: int) -> int:
    """Most threads this process had while one long scan ran in a session with `intra_op` threads, minus
    those it had before the run (the session's own pool exists from creation)."""
    import os
    import threading
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op
    so.register_custom_ops_library(str(built_cpp() / "libmuse_ort_ops.so"))
    sess = ort.InferenceSession(_single_node_model(TensorProto.FLOAT), so, providers=["CPUExecutionProvider"])
    b, length, d, n = 2, 4000, 64, 16
    rng = np.random.default_rng(0)
    shapes = {"T": (b, length, d), "BC": (b, length, n), "A": (d, n), "D": (d,)}
    feed = {}
    for t in C.inputs:
        kind = ("T" if t.shape.endswith("D)") else "BC") if t.type_var == "T" else \
            ("A" if t.name.startswith("A") else "D")
        feed[t.name] = (-np.abs(rng.standard_normal(shapes[kind])) if kind == "A"
                        else 0.1 * rng.standard_normal(shapes[kind])).astype(np.float32)
    before = len(os.listdir("/proc/self/task"))
    seen, stop = [before], threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(len(os.listdir("/proc/self/task")))
            time.sleep(0.002)

    w = threading.Thread(target=watch)
    w.start()
    try:
        for _ in range(3):
            sess.run(None, feed)
    finally:
        stop.set()
        w.join()
    return max(seen) - 1 - before  # the watcher itself is one


def test_op_library_uses_the_sessions_threads_only():
    assert _threads_during_scan(1) == 0
