"""Start `clickstream` commands as child processes on free ports (benchmarks and tests)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent



def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads) so far, from /proc/<pid>/stat
    (fields 14 and 15, utime and stime, in clock ticks: proc(5))."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclasses.dataclass
class Proc:
    """A `clickstream <command>` child process serving HTTP on `url`."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def sql_url(self) -> str:
        """Base URL of the query port (on with CLICKSTREAM_SQL_PASSWORD, `serve` only)."""
        return f"http://127.0.0.1:{self.env['CLICKSTREAM_SQL_PORT']}"

    @property
    def sql_password(self) -> str:
        return self.env.get("CLICKSTREAM_SQL_PASSWORD", "")

    def client(self, **kwargs: Any) -> httpx.Client:
        """A synchronous HTTP client on this process's base URL."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Send `sig`, wait for exit, return the exit code (kills after `timeout` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def peak_rss_bytes(self) -> int:
        """VmHWM of the process (peak resident set size), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


#: How a checkout runs the CLI; an installed wheel is `[<venv>/bin/clickstream]`.
CLI = (sys.executable, "-m", "clickstream.cli")


def start(command: str, data_dir: Path, env: dict[str, str] | None = None, ready_path: str = "/healthz",
          timeout: float = 60, taskset: str = "", program: Sequence[str] = CLI, cwd: Path = ROOT) -> Proc:
    """Start `<program> <command>` (default `python -m clickstream.cli`) in `cwd` on a free port (and
    the query port, CLICKSTREAM_SQL_PORT, on another) and wait until `ready_path` answers 200 (and,
    for `serve` with CLICKSTREAM_SQL_PASSWORD, the query port's /ping).
    A CLICKSTREAM_PORT in `env` fixes the port (a process restarted where its clients expect it).
    Raises RuntimeError (with the log) when it exits or does not get ready."""
    port = int((env or {}).get("CLICKSTREAM_PORT", 0)) or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    # `serve` in one process unless a caller asks for workers (CLICKSTREAM_WORKERS defaults to the CPUs)
    full_env.update({"CLICKSTREAM_PORT": str(port), "CLICKSTREAM_HOST": "127.0.0.1",
                     "CLICKSTREAM_SQL_PORT": str(free_port()), "CLICKSTREAM_SQL_HOST": "127.0.0.1",
                     "CLICKSTREAM_DATA_DIR": str(data_dir), "CLICKSTREAM_LOG_LEVEL": "warning",
                     "CLICKSTREAM_WORKERS": "0"})
    full_env.update(env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-{command.replace(' ', '-')}-{port}.log"
    prefix = ["taskset", "-c", taskset] if taskset else []
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen([*prefix, *program, *command.split()], env=full_env,
                                stdout=log_fh, stderr=subprocess.STDOUT, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    # serve's query port listens once the main app has started: wait for it too when it is on
    query_port = command.split()[0] == "serve" and bool(full_env.get("CLICKSTREAM_SQL_PASSWORD"))
    sql_url = f"http://127.0.0.1:{full_env['CLICKSTREAM_SQL_PORT']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command} exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + ready_path, timeout=1).status_code == 200 and (
                    not query_port or httpx.get(sql_url + "/ping", timeout=1).status_code == 200):
                return Proc(url, data_dir, proc, log_path, full_env)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{command} did not become ready:\n{log_path.read_text()}")
