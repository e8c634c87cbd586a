"""One typed settings object per process, read from `CLICKSTREAM_*` environment variables.

Built on pydantic-settings: every field `name` is read from `CLICKSTREAM_<NAME>` (uvicorn's
`UVICORN_*` convention, docs/architecture.md "Settings"); command-line options override the
environment. Units are in the names (`_ms`, `_bytes`, `_s`, `_days`). Bounds are declared on the
fields and checked once, at start: a value that does not parse or is out of bounds raises
`SettingsError` naming the variable. Secrets are `SecretStr`, hidden from `repr` and logs
(`.get_secret_value()` reads them). The CLI's help shows each default from here (`describe`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "CLICKSTREAM_"

MiB = 1024 * 1024

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]

#: URL paths the collector may be given for beacon.js and POST /collect, and the first segments
#: other routes own (docs/architecture.md "HTTP").
_ROUTE_PATH = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")
RESERVED_ROUTES = ("healthz", "readyz", "metrics", "stitch", "sql", "dashboard")


#: What a site_id and a browser Origin look like (schemas/event.schema.json; RFC 6454 serialised origin).
_SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _sites(value: Any) -> Any:
    """`a.com=https://a.com,https://www.a.com;b.io=https://b.io` -> {"a.com": ("https://a.com", ...), ...}.

    A site without `=` has no browser origin (server-side senders only)."""
    if not isinstance(value, str):
        return value
    sites: dict[str, tuple[str, ...]] = {}
    for part in value.split(";"):
        site, _, origins = part.partition("=")
        if site.strip():
            sites[site.strip()] = tuple(o.strip().rstrip("/").lower() for o in origins.split(",") if o.strip())
    return sites


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _origins(value: Any) -> Any:
    """`a, b,` -> ("a", "b"): the comma-separated form of list settings (CORS origins)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Configuration of every clickstream process (collector, flusher, stitcher, serve)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Data directory: spool/, rejected/, outbox/, clickhouse/")
    host: str = Field("127.0.0.1", description="Bind address of the HTTP listener")
    port: int = Field(8000, gt=0, le=65535, description="Port of the HTTP listener")
    clickhouse_url: str = Field("", description="chdb:///path or http(s)://user:pass@host:8123/db "
                                                "[default chdb://<data-dir>/clickhouse]")
    clickhouse_cluster: str = Field("", description="ClickHouse cluster name (remote_servers) the migrations are "
                                                    "rendered for; empty = one server (deploy/README.md)")
    log_level: str = Field("info", description="Log level (debug, info, warning, error)")
    workers: NonNegative = Field(default_factory=lambda: os.cpu_count() or 1,
                                 description="serve: collector processes on the port, each with its own spool; "
                                             "0 = everything in one process [default: the number of CPUs]")
    spool_path: Path | None = Field(None, description="Spool directory [default <data-dir>/spool]")
    rejected_path: Path | None = Field(None, description="Dead-letter directory [default <data-dir>/rejected]")

    http_header_timeout_s: PositiveSeconds = Field(10.0, description="A connection must send a request's headers "
                                                                    "within this time (slow clients closed, counted)")
    http_body_timeout_s: PositiveSeconds = Field(30.0, description="... and its body within this time of the headers")
    http_backlog: Positive = Field(4096, description="Listen backlog of the HTTP listeners (connections waiting to "
                                                     "be accepted)")

    # collector
    max_body_bytes: Positive = Field(64 * 1024, description="Larger POST /collect bodies get 413")
    max_batch_events: Positive = Field(100, description="Events per POST /collect request")
    max_event_age_s: Positive = Field(72 * 3600, description="Older ts rejected (ts_too_old)")
    max_clock_skew_s: NonNegative = Field(300, description="ts further ahead rejected (ts_in_future)")
    custom_schemas_path: Path | None = Field(None, description="Directory of custom event schemas: <type>.json, the "
                                             "JSON Schema of that event type's props (docs/schema-versioning.md); "
                                             "unset: none")
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        ("*",), description="Comma-separated origins allowed to POST /collect; * echoes any origin")
    sites: Annotated[dict[str, tuple[str, ...]], NoDecode] = Field(
        default_factory=dict,
        description="Allowlist of sites and their browser origins: 'example.com=https://example.com,"
                    "https://www.example.com;shop.io=https://shop.io'; events of other site_ids are rejected "
                    "(unknown_site), a browser Origin not listed for the event's site too (origin_not_allowed), "
                    "and CORS answers only the listed origins; unset = any site, any origin")
    rejected_max_bytes: Positive = Field(64 * MiB, description="Bound of rejected/ (oldest files evicted, counted)")
    rejected_file_max_bytes: Positive = Field(8 * MiB, description="Rotation size of rejected/ files")
    script_path: str = Field("/beacon.js", description="Also serve beacon.js here (first-party proxying against "
                                                       "blockers); /beacon.js stays")
    collect_path: str = Field("/collect", description="Also accept events here; the script served at "
                                                      "script_path posts to it; /collect stays")
    forwarded_allow_ips: str = Field("127.0.0.1", description="Proxies whose X-Forwarded-For gives the client "
                                                              "IP (uvicorn's forwarded_allow_ips; * = any)")
    salt_dir: Path | None = Field(None, description="Daily salts of IP hashes and cookieless ids, deleted after "
                                                    "their day; keep out of backups "
                                                    "[default <tmp>/clickstream-salt-<uid>]")
    cookieless_max_visitors: Positive = Field(100_000, description="Cookieless visitors whose session is kept "
                                                                   "in memory (oldest evicted, counted)")

    # spool
    spool_fsync_interval_ms: NonNegative = Field(20, description="Group commit interval; 0 = fsync before each 202")
    spool_segment_max_bytes: Positive = Field(16 * MiB, description="A segment is sealed at this size")
    spool_segment_max_age_ms: Positive = Field(1000, description="A segment is sealed this old")
    spool_max_bytes: Positive = Field(1024 * MiB, description="Over it: 503 + Retry-After")

    # flusher
    flush_interval_ms: Positive = Field(1000, description="Longest flush interval, reached under load (about one "
                                                          "insert per second); the active segment is flushed "
                                                          "at the latest this old")
    flush_min_interval_ms: Positive = Field(200, description="Shortest flush interval, used when traffic is light "
                                                             "(adaptive in between, flusher.pacing)")
    flush_max_rows: Positive = Field(50_000, description="Rows per insert")
    flush_retry_max_s: PositiveSeconds = Field(30.0, description="Cap of the jittered backoff on transient errors")
    retention_days: NonNegative = Field(0, description="TTL of events in days; 0 keeps forever")
    dedup_max_ids: Positive = Field(1_000_000, description="Event ids remembered at least, to drop client retries "
                                                           "(~190 B each; up to twice as many kept)")
    fold_interval_s: PositiveSeconds = Field(10.0, description="How often the fold rebuilds the dirty days of the "
                                                               "roll-ups the dashboard views read (their freshness; "
                                                               "reports/fold.py)")

    # stitcher
    stitch_token: SecretStr = Field(SecretStr(""), description="Bearer token of POST /stitch (off until set)")
    attribution_lookback_days: Positive = Field(90, description="Sessions considered for first/last touch")
    lead_webhook_url: str = Field("", description="Where lead_created is POSTed at least once (http(s)://)")
    lead_webhook_secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key of the webhook signature")
    lead_webhook_timeout_s: PositiveSeconds = Field(10.0, description="Timeout of one webhook delivery")
    stitch_max_body_bytes: Positive = Field(32 * 1024, description="Larger POST /stitch bodies get 413")
    stitch_flush_timeout_s: PositiveSeconds = Field(30.0, description="Freshness flush bound before attribution; "
                                                                      "503 past it")
    relay_retry_max_s: PositiveSeconds = Field(60.0, description="Cap of the relay's jittered backoff")
    stitch_session_wait_s: Annotated[float, Field(ge=0, le=60)] = Field(
        3.0, description="When the visitor or the named session_id has no event yet (the browser's last batch "
                         "still in flight), wait up to this long for it, re-flushing, before recording the lead "
                         "without it; 0 = no wait")
    stitch_default_site: str = Field("unknown", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
                                     description="Site of a lead whose request has no site_id and whose visitor "
                                                 "has no session (recorded unattributed, counted)")

    # query port: ClickHouse's HTTP interface for dashboards (reports/query_port)
    sql_host: str = Field("127.0.0.1", description="Bind address of the query port (keep it internal)")
    sql_port: int = Field(8123, gt=0, le=65535, description="Port of the query port (ClickHouse's HTTP port)")
    sql_user: str = Field("dashboards", min_length=1, description="User name dashboards connect with")
    sql_password: SecretStr = Field(SecretStr(""), description="Password of the query port (off until set)")
    sql_max_execution_time_s: PositiveSeconds = Field(30.0, description="Longer queries fail (code 159)")
    sql_max_memory_usage_bytes: Positive = Field(1024 * MiB, description="Memory of one query (code 241 over it)")
    sql_max_result_rows: Positive = Field(100_000, description="Larger results are an error, not a truncation")
    sql_max_result_bytes: Positive = Field(100 * MiB, description="Larger results are an error (code 396)")
    sql_max_concurrent_queries: Positive = Field(2, description="Queries running at once; more wait, then 503")
    sql_queue_max_wait_ms: NonNegative = Field(10_000, description="Wait for a free query slot before the 503")
    sql_max_threads: Positive = Field(1, description="Threads of one query (1 keeps a core for ingest)")

    #: Names of the settings whose values are secrets (never logged, never in /metrics).
    SECRETS: ClassVar[tuple[str, ...]] = ("stitch_token", "lead_webhook_secret", "sql_password")

    _split_origins = field_validator("cors_allow_origins", mode="before")(_origins)
    _split_sites = field_validator("sites", mode="before")(_sites)

    @field_validator("sites")
    @classmethod
    def _sites_well_formed(cls, sites: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for site, origins in sites.items():
            if not _SITE_ID.fullmatch(site):
                raise ValueError(f"{site!r} is not a site_id (letters, digits, . _ : -)")
            for origin in origins:
                if not _ORIGIN.fullmatch(origin):
                    raise ValueError(f"{origin!r} of {site} is not an origin like https://example.com[:port] "
                                     "(scheme and host, no path)")
        return sites

    @field_validator("clickhouse_url")
    @classmethod
    def _engine_url(cls, url: str) -> str:
        if url and not url.startswith(("chdb://", "http://", "https://")):
            raise ValueError(f"must start with chdb://, http:// or https://, got {url!r}")
        return url

    @field_validator("script_path", "collect_path")
    @classmethod
    def _route_path(cls, path: str) -> str:
        if not _ROUTE_PATH.fullmatch(path):
            raise ValueError(f"must be a path like /js/app.js (segments of letters, digits, . _ ~ -, "
                             f"not starting with a dot), got {path!r}")
        if path.split("/")[1] in RESERVED_ROUTES:
            raise ValueError(f"{path!r} is taken by another route ({', '.join('/' + r for r in RESERVED_ROUTES)})")
        return path

    @field_validator("lead_webhook_url")
    @classmethod
    def _webhook_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url!r}")
        return url

    @model_validator(mode="after")
    def _flush_intervals_ordered(self) -> Settings:
        if self.flush_min_interval_ms > self.flush_interval_ms:
            raise ValueError(f"flush_min_interval_ms: {self.flush_min_interval_ms} is above flush_interval_ms "
                             f"({self.flush_interval_ms})")
        return self

    @model_validator(mode="after")
    def _paths_differ(self) -> Settings:
        if self.collect_path == "/beacon.js":
            raise ValueError("collect_path: '/beacon.js' is the script's own path")
        if self.script_path in (self.collect_path, "/collect"):
            raise ValueError(f"script_path: {self.script_path!r} must differ from collect_path "
                             f"{self.collect_path!r} and from /collect")
        return self

    @model_validator(mode="after")
    def _log_level_known(self) -> Settings:
        if self.log_level.lower() not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError(f"log_level: unknown level {self.log_level!r}")
        return self

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """Origins CORS answers: those of every allowlisted site (CLICKSTREAM_SITES) when set, else
        CLICKSTREAM_CORS_ALLOW_ORIGINS."""
        if self.sites:
            return tuple(sorted({origin for origins in self.sites.values() for origin in origins}))
        return self.cors_allow_origins

    def env_text(self, name: str) -> str:
        """Setting `name` as its `CLICKSTREAM_<NAME>` variable holds it (what `from_env` reads back;
        secrets in clear: for a child process's environment only)."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, dict):
            return ";".join(f"{key}={','.join(items)}" if items else key for key, items in value.items())
        return str(value)

    # -- derived paths -----------------------------------------------------------------------
    @property
    def resolved_clickhouse_url(self) -> str:
        """The ClickHouse URL, defaulting to the embedded engine under the data directory."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def spool_dir(self) -> Path:
        return self.spool_path or self.data_dir / "spool"

    @property
    def rejected_dir(self) -> Path:
        return self.rejected_path or self.data_dir / "rejected"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def resolved_salt_dir(self) -> Path:
        """Where the daily salts live: `salt_dir`, else a per-user folder of the system's temporary
        directory, outside the data directory (so a copy of the data never holds a salt)."""
        if self.salt_dir is not None:
            return self.salt_dir
        return Path(tempfile.gettempdir()) / f"clickstream-salt-{os.getuid()}"

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Settings from `environ` (default `os.environ`), then the non-None `overrides`.

        Raises SettingsError naming `CLICKSTREAM_<NAME>` for each value that does not parse or
        is out of bounds.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            var = ENV_PREFIX + name.upper()
            if var in env:
                values[name] = env[var]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return _FromValues(**values)
        except ValidationError as exc:
            raise SettingsError(_describe_errors(exc, values)) from None


class _FromValues(Settings):
    """Settings validated from explicit values only: `from_env` has already read the mapping it
    was given, so the process environment must not fill in what that mapping lacks."""

    def __repr_name__(self) -> str:
        return "Settings"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _describe_errors(exc: ValidationError, values: Mapping[str, Any]) -> str:
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        if not name:  # a model-level check: its message starts with the field name
            name, _, message = str(error["msg"]).removeprefix("Value error, ").partition(": ")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        shown = "<secret>" if name in Settings.SECRETS else repr(values.get(name))
        parts.append(f"{ENV_PREFIX}{name.upper()}={shown}: {message}")
    return "; ".join(parts)


def describe(name: str) -> str:
    """Help text of setting `name` for the CLI: its description, variable and default."""
    field = Settings.model_fields[name]
    default = field.default
    if field.default_factory is not None:  # its description says the default
        return f"{field.description} [{ENV_PREFIX}{name.upper()}]"
    if isinstance(default, SecretStr):
        default = "unset" if not default.get_secret_value() else "set"
    elif isinstance(default, tuple | dict):
        default = ",".join(default)
    if default == "" or default is None:
        return f"{field.description} [{ENV_PREFIX}{name.upper()}]"
    return f"{field.description} [{ENV_PREFIX}{name.upper()}, default {default}]"
