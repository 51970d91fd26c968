"""Shared by the tests that start a tritonserver: free ports, waiting for readiness, process trees."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from muse_tvr.serve.server import descendant_pids as descendants  # noqa: F401  (the tests' name)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_ready(proc, client, models, log: Path, timeout_s: float) -> None:
    """Until the server and `models` are ready; fails the test (with the log's tail) if the process
    exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if client.is_server_ready() and all(client.is_model_ready(n) for n in models):
                return
        except Exception:  # not listening yet
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_tree(proc, timeout_s: float = 30) -> None:
    """SIGTERM `proc`; if it has not exited after `timeout_s`, SIGKILL it and every process under it."""
    family = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *family]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
