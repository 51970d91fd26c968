"""Requests/s and latency of `muse-tvr serve` as a client sees them: muse_text (one caption per request)
and muse_video (one video, frames FP32 [1, T, 3, S, S]) over HTTP, at 1, 4 and 16 concurrent clients,
with Triton's dynamic batcher on and off. Each configuration starts its own server (the CLI, a subprocess).

  python benchmarks/serving.py --backbone tiny ViT-B/32 --seconds 6 --json benchmarks/results/serving.json

Per cell: `concurrency` client threads, each with its own HTTP client, send requests back to back for
`--seconds` (and at least 2 requests per client) after one warm-up request each; latency is per request,
wall clock at the client; requests/s = completed requests / elapsed wall time of the cell.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import numpy as np

CONCURRENCY = (1, 4, 16)
MODELS = ("muse_text", "muse_video")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_server(backbone: str, batching: bool, log_path: str):
    import tritonclient.http as httpclient

    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-c", "from muse_tvr.cli import main; raise SystemExit(main())", "serve",
           "--backbone", backbone, "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    if not batching:
        cmd.append("--no-dynamic-batching")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"localhost:{http}"
    c = httpclient.InferenceServerClient(url)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}; see {log_path}")
        try:
            if c.is_server_ready() and all(c.is_model_ready(m) for m in MODELS):
                video_cfg = c.get_model_config("muse_video")
                c.close()
                return proc, url, video_cfg
        except Exception:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"serve not ready in 600 s; see {log_path}")


def request_inputs(model: str, video_cfg: dict, i: int):
    import tritonclient.http as httpclient

    if model == "muse_text":
        x = httpclient.InferInput("text", [1, 1], "BYTES")
        x.set_data_from_numpy(np.array([[f"a person does thing number {i} outdoors".encode()]], dtype=object))
        return [x]
    dims = [int(d) for d in video_cfg["input"][0]["dims"]]
    rng = np.random.default_rng(i)
    f = httpclient.InferInput("frames", [1, *dims], "FP32")
    f.set_data_from_numpy(rng.standard_normal((1, *dims), dtype=np.float32))
    m = httpclient.InferInput("mask", [1, dims[0]], "FP32")
    m.set_data_from_numpy(np.ones((1, dims[0]), np.float32))
    return [f, m]


def run_cell(url: str, model: str, video_cfg: dict, concurrency: int, seconds: float) -> dict:
    import tritonclient.http as httpclient

    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client(k: int):
        c = httpclient.InferenceServerClient(url, connection_timeout=600, network_timeout=600)
        inputs = request_inputs(model, video_cfg, k)
        c.infer(model, inputs)  # warm-up (connection, first batch shapes)
        start.wait()
        mine, n = [], 0
        while n < 2 or time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            c.infer(model, inputs)
            mine.append(time.perf_counter() - t0)
            n += 1
        with lock:
            latencies.extend(mine)
        c.close()

    load_before = os.getloadavg()[0]
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"model": model, "concurrency": concurrency, "requests": len(lat), "seconds": round(elapsed, 2),
            "req_per_s": round(len(lat) / elapsed, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            # the 1-minute load average around the cell: other work on the machine shows here
            "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def markdown(rows: list[dict]) -> str:
    """One table: a row per (backbone, model, clients), batching on and off side by side."""
    cells = {(r["backbone"], r["model"], r["concurrency"], r["dynamic_batching"]): r for r in rows}
    out = ["| backbone | model | clients | batching on: req/s | p50 ms | p99 ms "
           "| batching off: req/s | p50 ms | p99 ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    for b, m, c in dict.fromkeys((r["backbone"], r["model"], r["concurrency"]) for r in rows):
        line = f"| {b} | {m} | {c} |"
        for batching in (True, False):
            r = cells.get((b, m, c, batching))
            line += f" {r['req_per_s']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |" if r else " - | - | - |"
        out.append(line)
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", nargs="+", default=["tiny"])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCY))
    p.add_argument("--batching", nargs="+", default=["on", "off"], choices=["on", "off"],
                   help="dynamic batching settings to run (default both)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--table", default=None, metavar="RESULTS.json",
                   help="print a results file as markdown; run nothing")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(markdown(json.load(f)["rows"]))
        return 0
    rows = []
    for backbone in args.backbone:
        for batching in [b == "on" for b in args.batching]:
            log_path = f"/tmp/muse-serve-bench-{os.getpid()}.log"
            proc, url, video_cfg = start_server(backbone, batching, log_path)
            try:
                for model in args.models:
                    for conc in args.concurrency:
                        row = {"backbone": backbone, "dynamic_batching": batching,
                               **run_cell(url, model, video_cfg, conc, args.seconds)}
                        rows.append(row)
                        print(f"{backbone:9s} batching={'on ' if batching else 'off'} {model:10s} "
                              f"c={conc:<2d} {row['req_per_s']:8.2f} req/s  p50 {row['p50_ms']:8.1f} ms  "
                              f"p99 {row['p99_ms']:8.1f} ms  ({row['requests']} requests, "
                              f"load {row['load_1min']})", flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "note": "server and client threads share the machine's cores",
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "seconds_per_cell": args.seconds}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
