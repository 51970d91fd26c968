"""A Triton client for `muse-tvr serve`: numpy + tritonclient + muse_tvr's numpy-only modules, no torch.

    muse-tvr serve --backbone tiny --gallery GALLERY &          # or --model MODEL_DIR
    python examples/triton_client.py --url localhost:8000 --caption "a dog on a beach" --video clip.mp4 -k 5

Embeds the caption (muse_text), the video twice (frames sampled here -> muse_video; the file's bytes ->
muse_video_bytes, decoded on the server), prints their cosine similarity, and searches the gallery
(muse_search) when the server has one. --grpc uses the gRPC port (8001) instead of HTTP.
"""
from __future__ import annotations

import argparse

import numpy as np

from muse_tvr.serve.client import captions_tensor, video_bytes_tensor, video_tensors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="localhost:8000")
    p.add_argument("--grpc", action="store_true", help="the url is the gRPC port")
    p.add_argument("--caption", required=True)
    p.add_argument("--video", default=None)
    p.add_argument("-k", type=int, default=5)
    args = p.parse_args()
    if args.grpc:
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    client = tc.InferenceServerClient(args.url)

    def tensor(name, array, dtype):
        x = tc.InferInput(name, list(array.shape), dtype)
        x.set_data_from_numpy(array)
        return x

    text = client.infer("muse_text", [tensor("text", captions_tensor([args.caption]), "BYTES")])
    t = text.as_numpy("embedding")[0]
    print(f"muse_text: embedding of {t.shape[0]} floats, norm {np.linalg.norm(t):.4f}")
    if args.video:
        # T and S come from the server's config, so the client samples exactly what the model takes
        meta = client.get_model_metadata("muse_video")
        inputs = meta["inputs"] if isinstance(meta, dict) else [{"name": i.name, "shape": list(i.shape)}
                                                                for i in meta.inputs]
        frames_shape = [int(d) for d in next(i for i in inputs if i["name"] == "frames")["shape"]]
        frames, mask = video_tensors(args.video, size=frames_shape[-1], max_frames=frames_shape[1])
        v = client.infer("muse_video", [tensor("frames", frames, "FP32"), tensor("mask", mask, "FP32")])
        vb = client.infer("muse_video_bytes", [tensor("video", video_bytes_tensor([args.video]), "BYTES")])
        v, vb = v.as_numpy("embedding")[0], vb.as_numpy("embedding")[0]
        print(f"muse_video vs muse_video_bytes: max |difference| {np.abs(v - vb).max():.2e}")
        print(f"cosine(caption, video) = {float(t @ v / (np.linalg.norm(t) * np.linalg.norm(v))):+.4f}")
    if client.is_model_ready("muse_search"):
        r = client.infer("muse_search", [tensor("text", captions_tensor([args.caption]), "BYTES"),
                                         tensor("k", np.array([[args.k]], np.int32), "INT32")])
        for rank, (key, score) in enumerate(zip(r.as_numpy("keys")[0], r.as_numpy("scores")[0]), start=1):
            print(f"  {rank:>3}. {score:+.4f}  {key.decode()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
