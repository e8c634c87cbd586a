"""Build and run the processes behind the CLI: collector, flusher, serve (all in one)."""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from clickstream.settings import Settings
from clickstream.web import create_app
from collector.app import Collector
from collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)


def collector_app(settings: Settings) -> Starlette:
    """The collector alone: /collect, /beacon.js, /healthz, /readyz, /metrics."""
    registry = CollectorRegistry()
    collector = Collector(settings, CollectorMetrics(registry))
    return create_app([collector], registry, cors_allow_origins=settings.cors_allow_origins)


def run_uvicorn(app: Starlette, settings: Settings) -> None:
    """Serve with uvloop + httptools, no access log (it would dominate the hot path's cost)."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        access_log=False, log_level=settings.log_level, timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run()


def run_collector(settings: Settings) -> None:
    run_uvicorn(collector_app(settings), settings)
