"""`medjson serve` in a background process on a free localhost port, in a folder of its own that gets
the project's params.yaml with the serve overrides (as a workspace gets its overrides): for scripts
that need the real service, the load benchmark (bench/serve_load.py) and the service's tests.

    with running_service(folder, "models/grpo_merged", max_batch_size=8) as (url, process):
        httpx.post(f"{url}/v1/answer", json=question)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from medjson.workspace import PROJECT_ROOT


def wait_until_ready(url: str, process, timeout_s: float) -> None:
    """Block until a service started as ``process`` answers ``GET /health`` with ok; raise if it exits
    or does not within ``timeout_s`` (the model loads before the port opens)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the service at {url} was not ready within {timeout_s:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    folder: Path, model, env: dict | None = None, log: Path | None = None, ready_timeout_s: float = 120, **serve
) -> tuple[subprocess.Popen, str]:
    """``medjson serve`` on a free localhost port in a subprocess: the project's params.yaml with
    ``serve`` overrides (72 new tokens and no abstention file unless given), its output to
    ``log`` (a pipe without one); returns once it answers ``/health``."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    port = free_port()
    params["serve"].update({"max_new_tokens": 72, "abstention": None, **serve, "model": str(model), "port": port})
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    process = subprocess.Popen(
        [sys.executable, "-m", "medjson.commands.serve", "--params", str(folder / "params.yaml")],
        cwd=folder,
        stdout=log.open("w") if log else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout_s=ready_timeout_s)
    except RuntimeError as err:
        raise RuntimeError(f"{err}: {f'see {log}' if log else process.stdout.read()}") from None
    return process, url


@contextlib.contextmanager
def running_service(folder: Path, model, **options):
    """``start_service`` for the length of a ``with`` block: yields ``(url, process)`` and stops the
    service however the block ends (``process.stdout`` then holds its whole output, when no log file
    was given)."""
    process, url = start_service(folder, model, **options)
    try:
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)
