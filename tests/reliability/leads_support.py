"""Helpers shared by the leads, hostile-input, sites and privacy suites of tests/reliability/.

Sizes: CI size by default, full size with RELIABILITY_FULL=1 (`make reliability`). Figures a
suite measures are printed as one JSON line prefixed `RELIABILITY ` (RELIABILITY.md quotes them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from clickstream.core.spool import SpoolReader
from collector.rejected import RejectedStore

FULL = os.environ.get("RELIABILITY_FULL") == "1"


def size(ci: int, full: int) -> int:
    """`full` with RELIABILITY_FULL=1, else `ci`."""
    return full if FULL else ci


def report(suite: str, **figures: Any) -> None:
    """Print a suite's figures as one JSON line (`pytest -s` shows it; RELIABILITY.md quotes them)."""
    print("RELIABILITY " + orjson.dumps({"suite": suite, "full": FULL, **figures}).decode(), flush=True)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0.0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def spooled(data_dir: Path) -> list[dict[str, Any]]:
    """Every event in the spool of `data_dir` (sealed and active segments)."""
    return [orjson.loads(r.payload) for r in SpoolReader(data_dir / "spool").iter_all()]


def rejected(data_dir: Path) -> list[dict[str, Any]]:
    """Every dead letter kept in `data_dir`/rejected."""
    return list(RejectedStore(data_dir / "rejected").read_all())


def files_under(*roots: Path) -> Iterator[Path]:
    """Every regular file below the roots (missing roots are skipped)."""
    for root in roots:
        if root.exists():
            yield from (p for p in root.rglob("*") if p.is_file())


def grep_files(needle: bytes, *roots: Path) -> list[str]:
    """The files below `roots` whose bytes contain `needle` (as `grep -rl` would list them)."""
    return [str(p) for p in files_under(*roots) if needle in p.read_bytes()]


@dataclass
class Webhook:
    """A real HTTP receiver of lead_created webhooks: every POST kept with its Idempotency-Key.

    `fail_first`: answer 503 to that many first deliveries, received and kept all the same (an
    application that stored the lead and failed before its answer): the relay delivers them again.
    `down`: the same for every delivery while it is True."""

    fail_first: int = 0
    down: bool = False
    received: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with hook.lock:
                    refuse = hook.down or hook.fail_first > 0
                    if hook.fail_first > 0:
                        hook.fail_first -= 1
                    hook.received.append((self.headers.get("idempotency-key", ""), body))
                self.send_response(503 if refuse else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def by_key(self) -> dict[str, list[bytes]]:
        with self.lock:
            keyed: dict[str, list[bytes]] = {}
            for key, body in self.received:
                keyed.setdefault(key, []).append(body)
            return keyed

