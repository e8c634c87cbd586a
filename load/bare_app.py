"""The benchmark's baseline: a bare Starlette endpoint that reads the body and answers 202.

`python -m load.bare_app --port N` serves `POST /collect` through `clickstream.runner.run_uvicorn`,
so uvicorn runs exactly as for the collector (uvloop, httptools, no access log, one worker).
The answer has the collector's shape and size for one accepted event. Used by load/bench_collector.py.
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clickstream.core.settings import Settings
from clickstream.runner import run_uvicorn

_ANSWER = b'{"accepted":1,"rejected":0,"errors":[]}'


async def collect(request: Request) -> Response:
    """Read the whole body, answer 202 with a constant JSON body."""
    await request.body()
    return Response(_ANSWER, status_code=202, media_type="application/json")


def create_app() -> Starlette:
    """The baseline app: only `POST /collect`."""
    return Starlette(routes=[Route("/collect", collect, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_uvicorn(create_app(), Settings(host=args.host, port=args.port, log_level="warning"))


if __name__ == "__main__":
    main()
