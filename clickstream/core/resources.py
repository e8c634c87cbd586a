"""Package data: JSON Schemas, SQL migrations and static files, found through importlib.resources.

The repository keeps `schemas/` and `sql/` at its top level; the wheel ships them inside the
`clickstream` package as `clickstream.schemas` and `clickstream.sql` (pyproject.toml
`[tool.setuptools.package-dir]`), so `pip install .` and `pip install -e .` read the same files
the same way (docs/architecture.md "Layers and packages"). Nothing reads them by a path relative
to the source tree.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import orjson


def schemas() -> Traversable:
    """The folder of JSON Schemas (`event.schema.json`, `stitch_request.schema.json`, ...)."""
    return files("clickstream.schemas")


def migrations() -> Traversable:
    """The folder of numbered SQL migrations (`0001_events.sql`, ...)."""
    return files("clickstream.sql")


def static(package: str, name: str) -> Traversable:
    """The file `static/<name>` shipped with component `package` (e.g. "collector", "beacon.js")."""
    return files(package) / "static" / name


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema document `schemas/<name>` (cached). Raises FileNotFoundError."""
    schema: dict[str, Any] = orjson.loads(schemas().joinpath(name).read_bytes())
    return schema


@cache
def version() -> str:
    """The installed distribution's version (`0+unknown` in a source tree never installed)."""
    try:
        return _dist_version("clickstream")
    except PackageNotFoundError:
        return "0+unknown"
