"""Shared fixtures: real processes on free ports, real data directories, event factories."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def now_ms() -> int:
    return int(time.time() * 1000)


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid page view stamped now; keyword arguments replace fields."""
    event: dict[str, Any] = {
        "type": "page_view",
        "site_id": "example.com",
        "anonymous_id": "anon-1",
        "session_id": "sess-1",
        "ts": now_ms(),
        "url": "https://example.com/pricing?utm_source=newsletter&utm_medium=email",
        "event_id": str(uuid.uuid4()),
    }
    event.update(overrides)
    return event


@dataclass
class Server:
    """A `clickstream <command>` child process serving HTTP on `url`."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Send `sig`, wait for exit, return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    command: str, data_dir: Path, env: dict[str, str] | None = None, ready_path: str = "/healthz",
    timeout: float = 60,
) -> Server:
    """Start `python -m clickstream.cli <command>` on a free port and wait until it answers."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    full_env.update({
        "CLICKSTREAM_PORT": str(port),
        "CLICKSTREAM_HOST": "127.0.0.1",
        "CLICKSTREAM_DATA_DIR": str(data_dir),
        "CLICKSTREAM_LOG_LEVEL": "warning",
    })
    full_env.update(env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-{command}-{port}.log"
    log_fh = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "clickstream.cli", *command.split()], env=full_env,
                            stdout=log_fh, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command} exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + ready_path, timeout=1).status_code == 200:
                return Server(url, data_dir, proc, log_path, full_env)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{command} did not become ready:\n{log_path.read_text()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers on demand; every one still running is stopped (SIGTERM) at teardown."""
    started: list[Server] = []

    def factory(command: str = "collector", data_dir: Path | None = None, **env: str) -> Server:
        server = start_server(command, data_dir or tmp_path / "data",
                              {f"CLICKSTREAM_{k.upper()}": str(v) for k, v in env.items()})
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
