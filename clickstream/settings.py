"""One typed settings object per process, read from `CLICKSTREAM_*` environment variables.

Every field `name` is read from `CLICKSTREAM_<NAME>` (uvicorn's `UVICORN_*` convention, see
ARCHITECTURE.md "Command line"); command-line options override the environment. Units are in
the names (`_ms`, `_bytes`, `_s`, `_days`). A value that does not parse fails at start with a
`SettingsError` naming the variable. Secrets are hidden from `repr`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "CLICKSTREAM_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Configuration of every clickstream process (collector, flusher, stitcher, serve)."""

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8000
    clickhouse_url: str = ""  # empty: chdb://<data_dir>/clickhouse
    log_level: str = "info"

    # collector
    max_body_bytes: int = 64 * 1024
    max_batch_events: int = 100
    max_event_age_s: int = 72 * 3600
    max_clock_skew_s: int = 300
    cors_allow_origins: tuple[str, ...] = ("*",)
    rejected_max_bytes: int = 64 * 1024 * 1024
    rejected_file_max_bytes: int = 8 * 1024 * 1024

    # spool
    spool_fsync_interval_ms: int = 20
    spool_segment_max_bytes: int = 16 * 1024 * 1024
    spool_segment_max_age_ms: int = 1000
    spool_max_bytes: int = 1024 * 1024 * 1024

    # flusher
    flush_interval_ms: int = 1000
    flush_max_rows: int = 50_000
    flush_retry_max_s: float = 30.0
    retention_days: int = 0  # 0: keep forever
    dedup_max_ids: int = 1_000_000  # event ids remembered to drop client retries (~120 B each)

    # stitcher (checked by stitcher.service.check_settings at start)
    stitch_token: str = dataclasses.field(default="", repr=False)
    attribution_lookback_days: int = 90
    lead_webhook_url: str = ""
    lead_webhook_secret: str = dataclasses.field(default="", repr=False)  # HMAC-SHA256 signature key
    lead_webhook_timeout_s: float = 10.0
    stitch_max_body_bytes: int = 32 * 1024
    stitch_flush_timeout_s: float = 30.0  # freshness flush before attribution; 503 past it
    relay_retry_max_s: float = 60.0  # cap of the relay's jittered exponential backoff

    # dashboards
    admin_token: str = dataclasses.field(default="", repr=False)
    sql_max_result_rows: int = 100_000

    def __post_init__(self) -> None:
        positive = (
            "port", "max_body_bytes", "max_batch_events", "max_event_age_s", "spool_segment_max_bytes",
            "spool_segment_max_age_ms", "spool_max_bytes", "flush_interval_ms", "flush_max_rows",
            "rejected_max_bytes", "rejected_file_max_bytes", "attribution_lookback_days",
            "sql_max_result_rows", "dedup_max_ids",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be > 0, got {getattr(self, name)!r}")
        for name in ("spool_fsync_interval_ms", "max_clock_skew_s", "retention_days"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be >= 0, got {getattr(self, name)!r}")
        if self.port > 65535:
            raise SettingsError(f"{ENV_PREFIX}PORT must be <= 65535, got {self.port}")
        url = self.resolved_clickhouse_url
        if not url.startswith(("chdb://", "http://", "https://")):
            raise SettingsError(
                f"{ENV_PREFIX}CLICKHOUSE_URL must start with chdb://, http:// or https://, got {url!r}"
            )

    @property
    def resolved_clickhouse_url(self) -> str:
        """The ClickHouse URL, defaulting to the embedded engine under the data directory."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def rejected_dir(self) -> Path:
        return self.data_dir / "rejected"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Build settings from `environ` (default `os.environ`), then apply non-None `overrides`.

        Raises SettingsError naming `CLICKSTREAM_<NAME>` when a value does not parse.
        """
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            var = ENV_PREFIX + field.name.upper()
            if var in env:
                values[field.name] = _parse(var, env[var], hints[field.name])
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        return cls(**values)


def _parse(var: str, raw: str, hint: Any) -> Any:
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if hint is int:
            return int(raw.replace("_", ""))
        if hint is float:
            return float(raw)
        if hint is Path:
            return Path(raw)
        if typing.get_origin(hint) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{var}={raw!r} is not a valid {getattr(hint, '__name__', hint)}: {exc}") from exc
