"""`clickstream` command line (click). Commands and options: docs/architecture.md "Command line".

Every option is also `CLICKSTREAM_<OPTION>`; an option given on the command line wins. Help texts
and defaults come from the settings themselves (clickstream.core.settings.describe).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from clickstream.core.settings import Settings, SettingsError, describe


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(overrides=overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


def _collector_settings(**overrides: Any) -> Settings:
    """`_settings` for commands that validate events: the custom event schemas are checked here, so a
    bad file stops the command with its name before anything starts (collector.schemas)."""
    from collector.schemas import SchemaLoadError, load_custom_schemas

    settings = _settings(**overrides)
    try:
        load_custom_schemas(settings.custom_schemas_path)
    except SchemaLoadError as exc:
        raise click.UsageError(f"CLICKSTREAM_CUSTOM_SCHEMAS_PATH: {exc}") from None
    return settings


#: uvicorn's TRACE level (below DEBUG), which `logging` does not know by name.
TRACE = 5


def _level(settings: Settings) -> int | str:
    return TRACE if settings.log_level.lower() == "trace" else settings.log_level.upper()


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=_level(settings),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


_host = click.option("--host", default=None, help=describe("host"))
_port = click.option("--port", type=int, default=None, help=describe("port"))
_data_dir = click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=describe("data_dir"))
_ch_url = click.option("--clickhouse-url", default=None, help=describe("clickhouse_url"))


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
    from clickstream.runner import ListenerError, run_collector

    settings = _collector_settings(host=host, port=port, data_dir=data_dir)
    _logging(settings)
    try:
        run_collector(settings)
    except ListenerError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@_host
@_port
@_data_dir
@_ch_url
@click.option("--workers", type=click.IntRange(min=0), default=None, help=describe("workers"))
def serve(host: str | None, port: int | None, data_dir: Path | None, clickhouse_url: str | None,
          workers: int | None) -> None:
    """Collector + flusher + stitcher, embedded ClickHouse by default, and the query port for dashboards
    (ClickHouse's HTTP interface) when CLICKSTREAM_SQL_PASSWORD is set.

    With --workers N (default: the number of CPUs), N collector processes share the port, each with
    its own spool, and this process owns ClickHouse and the query port; --workers 0 runs everything in
    one process.
    """
    from clickstream.runner import ListenerError, run_serve

    settings = _collector_settings(host=host, port=port, data_dir=data_dir, clickhouse_url=clickhouse_url,
                                   workers=workers)
    _logging(settings)
    try:
        run_serve(settings)
    except ListenerError as exc:
        raise click.ClickException(str(exc)) from None


@main.command(hidden=True)
@click.option("--fd", type=int, required=True, help="Inherited listening socket")
@click.option("--index", type=int, required=True, help="Worker number (for the logs)")
@click.option("--owner-socket", type=click.Path(path_type=Path), required=True)
def worker(fd: int, index: int, owner_socket: Path) -> None:
    """One collector process of `serve --workers` (started by serve, not by hand)."""
    from clickstream.runner import run_worker

    settings = _settings()
    logging.basicConfig(level=_level(settings), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    run_worker(settings, fd, owner_socket)


@main.command()
@_host
@_port
@_data_dir
@_ch_url
def flusher(host: str | None, port: int | None, data_dir: Path | None, clickhouse_url: str | None) -> None:
    """Run the flusher alone: spool -> ClickHouse (metrics on --port)."""
    from clickstream.runner import run_flusher

    settings = _settings(host=host, port=port, data_dir=data_dir, clickhouse_url=clickhouse_url)
    _logging(settings)
    run_flusher(settings)


@main.command()
@_data_dir
@_ch_url
@click.option("--cluster", default=None, metavar="NAME",
              help="Render for the ClickHouse cluster NAME (remote_servers): ON CLUSTER, Replicated engines, "
                   "Distributed tables sharded by visitor; needs an http(s):// ClickHouse URL unless --print "
                   "[CLICKSTREAM_CLICKHOUSE_CLUSTER]")
@click.option("--print", "print_only", is_flag=True, default=False,
              help="With --cluster: write the SQL to stdout instead of running it")
@click.option("--dedup-window", type=click.IntRange(min=1), default=None,
              help="With --cluster: replicated_deduplication_window of every table, blocks [default 10000]")
@click.option("--dedup-window-seconds", type=click.IntRange(min=1), default=None,
              help="With --cluster: replicated_deduplication_window_seconds [default 604800, 7 days]")
def migrate(data_dir: Path | None, clickhouse_url: str | None, cluster: str | None, print_only: bool,
            dedup_window: int | None, dedup_window_seconds: int | None) -> None:
    """Apply the sql/ migrations (idempotent) and print what was applied.

    With --cluster NAME, the same files rendered for a ClickHouse cluster (deploy/README.md).
    """
    from clickstream.core.clickhouse import open_clickhouse

    settings = _settings(data_dir=data_dir, clickhouse_url=clickhouse_url)
    cluster = cluster or settings.clickhouse_cluster or None
    if cluster is None:
        if print_only or dedup_window or dedup_window_seconds:
            raise click.UsageError("--print, --dedup-window and --dedup-window-seconds need --cluster NAME")
        _logging(settings)
        open_clickhouse(settings.resolved_clickhouse_url, retention_days=settings.retention_days).close()
        click.echo("migrations up to date")
        return
    from clickstream.core import cluster as clusters

    defaults = clusters.ClusterOptions(cluster)
    options = clusters.ClusterOptions(
        cluster, dedup_window=dedup_window or defaults.dedup_window,
        dedup_window_seconds=dedup_window_seconds or defaults.dedup_window_seconds)
    try:
        if print_only:
            click.echo(clusters.render_script(options, retention_days=settings.retention_days), nl=False)
            return
        if not settings.resolved_clickhouse_url.startswith(("http://", "https://")):
            raise click.UsageError("--cluster runs the migrations on a ClickHouse server: set --clickhouse-url "
                                   "http(s)://user:password@host:8123/clickstream (or use --print)")
        _logging(settings)
        client = open_clickhouse(settings.resolved_clickhouse_url, retention_days=settings.retention_days,
                                 target=clusters.target(options))
    except clusters.ClusterRenderError as exc:
        raise click.ClickException(str(exc)) from exc
    client.close()
    click.echo(f"migrations up to date on cluster {cluster}")


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              help="table (default) or json (one JSON object per row)")
@_data_dir
@_ch_url
@click.option("--url", "port_url", default=None,
              help="URL of the query port of a running `clickstream serve` "
                   "[default http://CLICKSTREAM_SQL_HOST:CLICKSTREAM_SQL_PORT when serve holds the data directory]")
def sql(query: str, fmt: str, data_dir: Path | None, clickhouse_url: str | None, port_url: str | None) -> None:
    """Run one read-only QUERY and print the result.

    While `clickstream serve` runs: through its query port (ClickHouse's HTTP interface; password from
    CLICKSTREAM_SQL_PASSWORD or <data-dir>/.sql_password). Otherwise on the embedded directory itself,
    or on the ClickHouse server of --clickhouse-url. Read only and bounded the same way everywhere.
    """
    from reports.output import dumps, format_table
    from reports.query import run_cli_query

    settings = _settings(data_dir=data_dir, clickhouse_url=clickhouse_url)
    try:
        result = run_cli_query(settings, query, port_url)
    except Exception as exc:  # every failure is shown as a message, not a traceback
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        for row in result["rows"]:
            click.echo(dumps(dict(zip(result["columns"], row, strict=True))).decode())
    else:
        click.echo(format_table(result["columns"], result["rows"]))


@main.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "ga4"]), default="jsonl", show_default=True,
              help="jsonl: events (or envelopes) one per line; ga4: a GA4 BigQuery export as JSON lines")
@click.option("--site", "site_id", default=None, help="site_id of GA4 rows [the host of page_location]")
@click.option("--user-agent", default=None, help="User-Agent for events without one [a browser-like import UA]")
@click.option("--workers", type=int, default=None, help="Validating processes [one per core]")
@click.option("--flush/--no-flush", default=False, show_default=True,
              help="Also flush into ClickHouse while reading (only when no serve/flusher holds the data directory)")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal]")
@_data_dir
@_ch_url
def import_(file: Path, fmt: str, site_id: str | None, user_agent: str | None, workers: int | None, flush: bool,
            progress: bool | None, data_dir: Path | None, clickhouse_url: str | None) -> None:
    """Bulk-load historical events (JSONL, or a GA4 BigQuery export; gzip or zstd compressed or not)
    through the collector's validation into the spool.

    A running serve or flusher picks the segments up; otherwise the next one does, or --flush now.
    Rejected lines are kept in <data-dir>/rejected/ with their reason and line number. Prints a JSON
    summary (accepted, rejected by reason, events/s) as its last line.
    """
    import json
    import time

    from collector.importer import DEFAULT_USER_AGENT, import_file

    settings = _collector_settings(data_dir=data_dir, clickhouse_url=clickhouse_url)
    _logging(settings)
    flusher = None
    client = None
    if flush:
        from clickstream.core.cluster import open_configured
        from flusher.loop import Flusher

        client = open_configured(settings)
        flusher = Flusher(settings, client)
        flusher.start()  # streams: inserts each segment as soon as the import seals it
    started = time.perf_counter()
    flushed_s = fold_s = None
    try:
        result = import_file(settings, file, user_agent=user_agent or DEFAULT_USER_AGENT, fmt=fmt,
                             site_id=site_id, workers=workers, progress=progress)
    finally:
        if flusher is not None:
            flusher.stop()  # drains what is left (or, after an error, what was sealed)
            flushed_s = time.perf_counter() - started
        if client is not None:
            if not settings.clickhouse_cluster:
                from reports.fold import fold

                fold_started = time.perf_counter()
                fold(client)  # the roll-ups of the imported days (reports/fold.py)
                fold_s = time.perf_counter() - fold_started
            client.close()
    summary = result.as_json()
    if flusher is not None and flushed_s is not None:  # flushed_s is set whenever a flusher ran
        summary.update(flushed_rows=flusher.rows_flushed, seconds_with_flush=round(flushed_s, 2),
                       events_per_s_with_flush=round(result.accepted / flushed_s))
        if fold_s is not None:  # the roll-ups' rebuild of the imported days, after the flush
            summary.update(fold_seconds=round(fold_s, 2))
    click.echo(json.dumps(summary))
    if result.rejected:
        sys.exit(1 if not result.accepted else 0)


@main.command(name="replay-rejected")
@click.option("--reason", "reasons", multiple=True, metavar="R",
              help="Only events rejected for this reason (repeatable), e.g. schema_violation, "
                   "unsupported_schema_version [all]")
@click.option("--since", default=None, metavar="T",
              help="Only events received at or after T: epoch ms, RFC 3339 with offset, or a UTC date YYYY-MM-DD")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal]")
@_data_dir
def replay_rejected(reasons: tuple[str, ...], since: str | None, progress: bool | None,
                    data_dir: Path | None) -> None:
    """Check the events kept in <data-dir>/rejected/ against today's schemas (after a schema was relaxed
    or a custom schema registered); those that pass go into the spool exactly once (idempotent by
    entry and event id, across repeated runs and crashes), the rest stay with their reason.

    A running serve or flusher picks the replayed events up, otherwise the next one does. Prints a
    JSON summary (replayed, still rejected by today's reason, already replayed) as its last line.
    """
    import json

    from collector.replay import ReplayLocked, parse_since
    from collector.replay import replay_rejected as replay
    from collector.validation import RejectReason

    known = {r.value for r in RejectReason}
    unknown = [r for r in reasons if r not in known]
    if unknown:
        raise click.BadParameter(f"unknown reason {', '.join(unknown)}; one of {', '.join(sorted(known))}",
                                 param_hint="--reason")
    try:
        since_ms = None if since is None else parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = _collector_settings(data_dir=data_dir)
    _logging(settings)
    try:
        result = replay(settings, reasons=set(reasons), since_ms=since_ms, progress=progress)
    except ReplayLocked as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result.as_json()))


@main.command()
@click.option("--site", default=None, help="Only this site_id")
@click.option("--experiment", default=None, help="Only this experiment_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@_data_dir
@_ch_url
def experiments(site: str | None, experiment: str | None, fmt: str, data_dir: Path | None,
                clickhouse_url: str | None) -> None:
    """Per variant: visitors, converters, rate, lift with 95% interval, p-value, chance to beat control, SRM."""
    from reports.experiments import run_report

    settings = _settings(data_dir=data_dir, clickhouse_url=clickhouse_url)
    try:
        click.echo(run_report(settings, site=site, experiment=experiment, fmt=fmt))
    except Exception as exc:  # shown as a message, not a traceback
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--site", default=None, help="Only this site_id [every site]")
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First UTC day YYYY-MM-DD [the first day of events]")
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Last UTC day YYYY-MM-DD, included [the last day of events]")
@click.option("--repair", is_flag=True, default=False,
              help="Rebuild every day with a difference (atomically, as the fold does), then check it again")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal]")
@_data_dir
@_ch_url
def reconcile(site: str | None, first: Any, last: Any, repair: bool, progress: bool | None, data_dir: Path | None,
              clickhouse_url: str | None) -> None:
    """Recompute every roll-up from `events` for the range and compare it per table, day and site.

    Prints each difference; exit status 1 when there is one (with --repair: when one is left after the
    repair). Needs the ClickHouse data to itself when it is embedded: stop `serve` first.
    """
    from reports.reconcile import LeaseBusy, format_report, run_reconcile

    settings = _settings(data_dir=data_dir, clickhouse_url=clickhouse_url)
    _logging(settings)
    try:
        report = run_reconcile(settings, site=site, first=first.date() if first else None,
                               last=last.date() if last else None, repair=repair,
                               progress=sys.stderr.isatty() if progress is None else progress)
    except LeaseBusy as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_report(report))
    sys.exit(1 if (report.after_repair if repair else report.differences) else 0)


@main.command()
@_host
@_port
@_data_dir
@_ch_url
def stitcher(host: str | None, port: int | None, data_dir: Path | None, clickhouse_url: str | None) -> None:
    """Run the stitcher alone (POST /stitch) against a ClickHouse server."""
    from clickstream.runner import run_stitcher

    settings = _settings(host=host, port=port, data_dir=data_dir, clickhouse_url=clickhouse_url)
    _logging(settings)
    run_stitcher(settings)


@main.command()
@click.option("--url", required=True, help="Base URL of a running collector or serve, e.g. http://127.0.0.1:8000")
@click.option("--events", type=int, default=None, help="Send about N events as fast as possible")
@click.option("--rate", type=float, default=None, help="Open-loop rate, events per second")
@click.option("--duration", "duration_s", type=float, default=None, help="Seconds to run at --rate")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True, help="Requests in flight at most")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Results directory [default load/results/<UTC time>]")
@click.option("--audit/--no-audit", default=True, show_default=True,
              help="Wait for the flusher, then check events, rejections and views against the ground truth")
@click.option("--audit-timeout-s", type=float, default=300.0, show_default=True)
@click.option("--sql-url", default=None,
              help="Query port of the serve under load, for the audit [default http://CLICKSTREAM_SQL_HOST:SQL_PORT]")
@_data_dir
def load(url: str, events: int | None, rate: float | None, duration_s: float | None, seed: int, concurrency: int,
         out_dir: Path | None, audit: bool, audit_timeout_s: float, sql_url: str | None,
         data_dir: Path | None) -> None:
    """Drive realistic traffic at a running collector and audit the result against its ground truth.

    Leads go through POST /stitch when CLICKSTREAM_STITCH_TOKEN is set; the audit reads through the query
    port (password CLICKSTREAM_SQL_PASSWORD or <data-dir>/.sql_password); rejected/ is checked when
    --data-dir (or CLICKSTREAM_DATA_DIR) is given. Exit status 0 only for a clean audit: 0 lost,
    0 duplicated, every view equal to the ground truth.
    """
    import os

    from load.run import LoadOptions, run
    from reports.query import sql_password

    settings = _settings(data_dir=data_dir)
    given_dir = data_dir or (settings.data_dir if "CLICKSTREAM_DATA_DIR" in os.environ else None)
    options = LoadOptions(url=url.rstrip("/"), events=events, rate=rate, duration_s=duration_s, seed=seed,
                          concurrency=concurrency, stitch_token=settings.stitch_token.get_secret_value(),
                          sql_url=sql_url or f"http://{settings.sql_host}:{settings.sql_port}",
                          sql_user=settings.sql_user, sql_password=sql_password(settings), data_dir=given_dir,
                          out_dir=out_dir, audit=audit, audit_timeout_s=audit_timeout_s)
    sys.exit(run(options))


if __name__ == "__main__":
    main()
