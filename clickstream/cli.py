"""`clickstream` command line (click). Commands and options: shared/ARCHITECTURE.md "Command line".

Every option is also `CLICKSTREAM_<OPTION>`; an option given on the command line wins.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from clickstream.settings import Settings, SettingsError


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(overrides=overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


_host = click.option("--host", default=None, help="Bind address [CLICKSTREAM_HOST, default 127.0.0.1]")
_port = click.option("--port", type=int, default=None, help="Port [CLICKSTREAM_PORT, default 8000]")
_data_dir = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                         help="Data directory [CLICKSTREAM_DATA_DIR, default ./data]")
_ch_url = click.option("--clickhouse-url", default=None,
                       help="chdb:///path or http(s)://user:pass@host:8123/db [CLICKSTREAM_CLICKHOUSE_URL]")


@click.group()
@click.version_option(package_name="clickstream")
def main() -> None:
    """Self-hosted web telemetry: collector, flusher, stitcher and SQL views on ClickHouse."""


@main.command()
@_host
@_port
@_data_dir
def collector(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run the collector alone: POST /collect -> spool (no ClickHouse needed)."""
    from clickstream.runner import run_collector

    settings = _settings(host=host, port=port, data_dir=data_dir)
    _logging(settings)
    run_collector(settings)


if __name__ == "__main__":
    main()
