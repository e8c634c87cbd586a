"""What `serve` composes: a component has routes, a lifecycle, readiness checks and gauges.

clickstream.web.create_app starts components in order and stops them in reverse, so that on
SIGTERM the collector stops accepting and seals the spool before the flusher drains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from starlette.routing import BaseRoute


class Check(NamedTuple):
    """One readiness check for `/readyz`: its name, whether it passes, and a detail for people."""

    name: str
    ok: bool
    detail: str = ""


class Component(Protocol):
    """A part of a clickstream process (collector, flusher, stitcher, query port, ...)."""

    def routes(self) -> Sequence[BaseRoute]:
        """HTTP routes of the component (may be empty)."""
        ...

    def start(self) -> None:
        """Open files and connections, start background threads. Raises on failure."""
        ...

    def stop(self) -> None:
        """Finish in-flight work and release everything `start` took."""
        ...

    def readiness(self) -> Sequence[Check]:
        """Checks for `/readyz` (may be empty)."""
        ...

    def update_gauges(self) -> None:
        """Refresh gauges before `/metrics` is rendered."""
        ...
