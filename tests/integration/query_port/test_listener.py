"""`serve`'s second listener: a taken query port address stops serve before anything starts, with the
variables' names; without CLICKSTREAM_SQL_PASSWORD there is no query port at all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port, start_server


def test_a_taken_query_port_address_fails_at_start_naming_the_variables(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
        env.update(CLICKSTREAM_DATA_DIR=str(tmp_path / "data"), CLICKSTREAM_PORT=str(free_port()),
                   CLICKSTREAM_SQL_PASSWORD="pw", CLICKSTREAM_SQL_PORT=str(taken.getsockname()[1]))
        done = subprocess.run([sys.executable, "-m", "clickstream.cli", "serve"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "CLICKSTREAM_SQL_HOST, CLICKSTREAM_SQL_PORT" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "clickhouse").exists()  # nothing was started


def test_no_password_no_query_port(tmp_path: Path) -> None:
    server = start_server("serve", tmp_path / "data", ready_path="/readyz")
    try:
        checks = server.client().get("/readyz").json()["checks"]
        assert "query_port" not in checks
        try:
            refused = httpx.get(server.sql_url + "/ping", timeout=5).status_code
        except httpx.TransportError:
            refused = 0
        assert refused == 0
    finally:
        assert server.stop() == 0
