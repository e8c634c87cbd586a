"""`python -m deploy.demo` (`make demo`): the pipeline and the demo site, stopped together.

Starts `clickstream serve` (collector + flusher + stitcher; `clickstream collector` while `serve`
does not exist yet) as a child process on CLICKSTREAM_PORT (default 8000), waits until it is
healthy, then serves the demo site with uvicorn on DEMO_PORT (default 8001). Ctrl-C or SIGTERM
stops the site first, then sends SIGTERM to the pipeline (which flushes its spool) and waits.
The pipeline gets CLICKSTREAM_STITCH_TOKEN and CLICKSTREAM_SQL_PASSWORD (demo values unless set)
so the site can stitch leads and you can query the query port (ClickHouse's HTTP interface on
CLICKSTREAM_SQL_PORT, default 8123) with `clickstream sql` or a dashboard (`/dashboard` on that port)
while it runs. When a pipeline already answers on CLICKSTREAM_PORT (`make run` in another terminal;
`make demo` passes it the same data directory and secrets), only the site starts, on that pipeline.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

import httpx
import uvicorn

from deploy.demo.app import DEFAULT_SQL_PASSWORD, DEFAULT_STITCH_TOKEN, DemoConfig, create_app, env_port

READY_TIMEOUT_S = 120.0  # the embedded ClickHouse's first start (migrations) takes a few seconds
STOP_TIMEOUT_S = 120.0  # SIGTERM makes serve flush everything spooled before it exits


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the pipeline exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the pipeline did not answer {url}/healthz within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        print("stopping the pipeline (it flushes its spool first)...", flush=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _hint(sql_url: str, sql_password: str) -> str:
    return (f"export CLICKSTREAM_SQL_PASSWORD={sql_password}  # lets `clickstream sql` query the running serve\n"
            "clickstream sql \"SELECT session_id, entry_path, pageviews, utm_source, utm_campaign FROM v_sessions\"\n"
            "clickstream sql \"SELECT lead_id, landing_path, first_touch, variants FROM lead_events\"\n"
            "clickstream sql \"SELECT * FROM v_variant_lift\"\n"
            f"# or, as a dashboard would: curl -u dashboards:{sql_password} --data-binary 'SELECT ... FORMAT JSON' "
            f"{sql_url}/")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _announce(config: DemoConfig, sql_url: str, demo_host: str, demo_port: int) -> None:
    print(f"clickstream serve: {config.stitch_url}   (query port for dashboards: {sql_url})\n"
          f"demo site:          http://{demo_host}:{demo_port}/   (Ctrl-C stops it)\n"
          f"dashboard:          {sql_url}/dashboard   (user dashboards, password CLICKSTREAM_SQL_PASSWORD)",
          flush=True)


def main() -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)  # until uvicorn takes over: stop the child too
    config = DemoConfig.from_env()
    demo_host = os.environ.get("DEMO_HOST", "127.0.0.1")
    demo_port = env_port(dict(os.environ), "DEMO_PORT", 8001)
    sql_password = os.environ.get("CLICKSTREAM_SQL_PASSWORD") or DEFAULT_SQL_PASSWORD
    sql_port = env_port(dict(os.environ), "CLICKSTREAM_SQL_PORT", 8123)
    sql_url = f"http://{os.environ.get('CLICKSTREAM_SQL_HOST', '127.0.0.1')}:{sql_port}"
    env = {**os.environ, "CLICKSTREAM_STITCH_TOKEN": config.stitch_token or DEFAULT_STITCH_TOKEN,
           "CLICKSTREAM_SQL_PASSWORD": sql_password}
    if _answers(config.stitch_url + "/healthz"):
        # `make run` already serves the pipeline (same data directory and secrets through the Makefile):
        # serve the site against it and leave it running.
        print(f"using the running pipeline at {config.stitch_url}", flush=True)
        config = dataclasses.replace(config, pipeline_hint=_hint(sql_url, sql_password))
        _announce(config, sql_url, demo_host, demo_port)
        uvicorn.run(create_app(config), host=demo_host, port=demo_port, log_level="warning", access_log=False)
        return 0
    # Its own session: Ctrl-C reaches only this process, which stops the child in order.
    proc = subprocess.Popen([sys.executable, "-m", "clickstream.cli", "serve"], env=env, start_new_session=True)
    try:
        _wait_ready(config.stitch_url, proc, READY_TIMEOUT_S)
        config = dataclasses.replace(config, pipeline_hint=_hint(sql_url, sql_password))
        server = uvicorn.Server(uvicorn.Config(create_app(config), host=demo_host, port=demo_port,
                                               log_level="warning", access_log=False))

        def watch() -> None:  # the demo is pointless without its pipeline
            proc.wait()
            server.should_exit = True

        threading.Thread(target=watch, daemon=True).start()
        _announce(config, sql_url, demo_host, demo_port)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        code = _stop(proc)
    # uvicorn re-raises the SIGTERM it handled once it has shut down: -SIGTERM is a clean stop too.
    clean = code in (0, -signal.SIGTERM)
    print(f"pipeline stopped (exit code {code})", flush=True)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
