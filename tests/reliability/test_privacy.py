"""Suite 7, privacy and access.

- No raw IP anywhere: a real `serve` receives events (accepted, rejected, consent pending), a stitch
  and a malformed body from two distinctive client addresses: one behind a trusted proxy
  (X-Forwarded-For) and one as the peer address (127.0.0.57). After a clean stop, neither
  address appears in any file of the data directory (spool, rejected/, outbox, ClickHouse), in the
  salt directory, in any row of any ClickHouse table, nor in the process log (at debug level).
- No SQL built from untrusted values: every call that runs SQL (clickhouse-connect, chDB, sqlite3)
  whose statement is formatted (f-string, %, .format, +) interpolates only constants, integers,
  quoted identifiers or the values listed in TRUSTED with the reason they cannot come from a request.
- Secrets never in logs or /metrics: the configured stitch token, query-port password and webhook
  secret do not appear in the log, /metrics, /readyz or a settings error.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from clickstream.core.settings import Settings, SettingsError
from tests.conftest import ROOT, make_event, start_server, wait_for
from tests.reliability.leads_support import files_under, grep_files, report

FORWARDED_IP = "203.0.113.77"  # TEST-NET-3 (RFC 5737): never a real visitor
PEER_IP = "127.0.0.57"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"


def test_no_raw_ip_in_clickhouse_spool_rejected_outbox_or_logs(tmp_path: Path) -> None:
    data_dir, salt_dir = tmp_path / "data", tmp_path / "salt"
    server = start_server("serve", data_dir, {
        "CLICKSTREAM_STITCH_TOKEN": "t0ken-privacy", "CLICKSTREAM_SQL_PASSWORD": "pw-privacy",
        "CLICKSTREAM_SALT_DIR": str(salt_dir), "CLICKSTREAM_LOG_LEVEL": "trace",  # the most verbose
        "CLICKSTREAM_SPOOL_SEGMENT_MAX_AGE_MS": "60000",  # keep an active segment on disk at the stop too
    })
    def events() -> list[dict[str, object]]:
        return [make_event(anonymous_id="ip-visitor", session_id="ip-s"),
                make_event(type="click", anonymous_id="ip-visitor", session_id="ip-s"),
                {"type": "page_view", "site_id": "example.com", "ts": make_event()["ts"], "consent": "pending",
                 "url": "https://example.com/cookieless"},
                make_event(site_id="")]  # rejected (schema), kept in rejected/

    answers = []
    try:
        proxied = httpx.Client(base_url=server.url, headers={"User-Agent": UA, "X-Forwarded-For": FORWARDED_IP})
        peer = httpx.Client(base_url=server.url, headers={"User-Agent": UA},
                            transport=httpx.HTTPTransport(local_address=PEER_IP))
        for client in (proxied, peer):
            with client:
                answers.append(client.post("/collect", json=events()).status_code)
                answers.append(client.post("/collect", content=b'{"not json', headers={"Content-Type": "text/plain"})
                               .status_code)
                answers.append(client.post("/collect", json={"oversized": "x" * 70_000}).status_code)
                lead = {"lead_id": f"L-{len(answers)}", "anonymous_id": "ip-visitor"}
                answers.append(client.post("/stitch", json=lead,
                                           headers={"Authorization": "Bearer t0ken-privacy"}).status_code)
                answers.append(client.post("/stitch", json={}, headers={"Authorization": "Bearer wrong"}).status_code)
        sql = httpx.Client(base_url=server.sql_url, auth=("dashboards", "pw-privacy"), timeout=60)
        with sql:
            wait_for(lambda: sql.post("/", content=b"SELECT count() FROM events").text.strip() == "6", 60,
                     "both clients' events in ClickHouse")
            tables = sql.post("/", content=b"SELECT name FROM system.tables WHERE database = 'clickstream' "
                                           b"AND engine NOT IN ('View', 'MaterializedView') FORMAT TabSeparated")
            assert tables.status_code == 200, tables.text
            names = tables.text.split()
            assert "events" in names and "lead_events" in names
            dumps = {name: sql.post("/", content=f"SELECT * FROM {name} FORMAT JSONEachRow".encode()) for name in names}
        assert all(d.status_code == 200 for d in dumps.values()), {n: d.text[:200] for n, d in dumps.items()}
        rows = sum(d.text.count("\n") for d in dumps.values())
        spool_files = list(files_under(data_dir / "spool"))  # before the stop drains the spool
        assert spool_files and not grep_files(FORWARDED_IP.encode(), data_dir / "spool")
        assert not grep_files(PEER_IP.encode(), data_dir / "spool")
    finally:
        assert server.stop() == 0
    assert answers == [202, 400, 413, 201, 401] * 2, answers
    # the events of both clients are in ClickHouse, with an IP hash (never the address)
    events_rows = [orjson.loads(line) for line in dumps["events"].text.splitlines()]
    assert len([r for r in events_rows if r["anonymous_id"] == "ip-visitor"]) == 4
    assert all(r["ip_hash"] and FORWARDED_IP not in r["ip_hash"] for r in events_rows)
    log = server.log()
    for ip in (FORWARDED_IP, PEER_IP):
        needle = ip.encode()
        assert not grep_files(needle, data_dir, salt_dir), ip
        assert not [n for n, d in dumps.items() if ip in d.text], ip
        assert ip not in log, ip
    scanned = list(files_under(data_dir, salt_dir))
    assert any("rejected" in str(p) for p in scanned) and any("outbox" in str(p) for p in scanned)
    report("privacy_ip", client_ips=[FORWARDED_IP, PEER_IP], files_scanned=len(scanned) + len(spool_files),
           tables_scanned=len(dumps), rows_scanned=rows, log_bytes=len(log), raw_ip_found=0)


# -- SQL built from values -------------------------------------------------------------------------
#: Methods that run SQL: clickhouse-connect (query, command, raw_query, insert...), chDB's
#: connection (query), sqlite3 (execute, executescript).
SQL_METHODS = frozenset({"query", "command", "raw_query", "raw_stream", "query_df", "query_arrow", "query_np",
                         "query_rows_stream", "query_column_block_stream", "query_row_block_stream",
                         "execute", "executemany", "executescript"})
#: Calls whose result is safe to interpolate whatever their argument.
SAFE_CALLS = frozenset({"int", "float", "quote_identifier", "len"})
#: (file, interpolated expression) -> why it cannot carry a request's value.
TRUSTED: dict[tuple[str, str], str] = {
    ("clickstream/core/clickhouse.py", "database"): "the database of CLICKSTREAM_CLICKHOUSE_URL (operator's setting)",
    ("clickstream/core/clickhouse.py", "format_str(path)"): "the insert file's path, made by tempfile.mkstemp in "
                                                          "this process (ClickHouseSink)",
    ("stitcher/outbox.py", "name"): "Target(target).value: an enum member name",
    ("stitcher/outbox.py", "column"): "f'{Target(target).value}_state': an enum member name",
    ("reports/query_port/engine.py", "job.marker"): "a uuid4 hex made by the server for KILL QUERY",
    ("reports/query_port/engine.py", "marker"): "a uuid4 hex made by the server for KILL QUERY",
    ("reports/query_port/engine.py", "statement.sql"): "the query port runs the dashboards' SQL by design, after "
                                                      "reports/query_port/guard.py (read only, no table functions)",
    ("reports/fold.py", "table"): "a roll-up or marks table name of reports/fold.py (TABLES / ROLLUP_SQL, "
                                  "fold_dirty_days, fold_dirty_visitors: constants)",
    ("reports/fold.py", "ROLLUP_COLUMNS[table]"): "column lists of reports/fold.py (constants)",
    ("reports/fold.py", "partition_id(day)"): "the partition id of a datetime.date (digits only)",
    ("reports/fold.py", "part"): "a part name read from _part of fold_dirty_days / fold_dirty_visitors",
    ("reports/fold.py", "target"): "a roll-up of reports/fold.py TABLES or its twin fold_next_<table> (constants)",
    ("reports/versions.py", "table"): "a roll-up of reports/fold.py TABLES (constants)",
    ("reports/versions.py", "twin"): "fold_next_ + a roll-up of reports/fold.py TABLES (constants)",
    ("reports/versions.py", "build.table"): "a roll-up of reports/fold.py TABLES (constants)",
    ("reports/versions.py", "build.twin"): "fold_next_ + a roll-up of reports/fold.py TABLES (constants)",
    ("reports/reconcile.py", "_VALUES[table]"): "column lists of reports/reconcile.py (constants)",
    ("reports/reconcile.py", "source or table"): "roll-up and staging table names of reports/fold.py (constants)",
    ("reports/reconcile.py", "where"): "built from DAY_COLUMN constants; day and site are bound parameters",
}
#: Files whose formatted SQL takes no outside input at all, with the reason.
TRUSTED_FILES: dict[str, str] = {
    "load/bench_": "benchmarks (`make bench`): they format their own integers, table names and view bodies "
                   "read from sql/; no request reaches them",
}
SCANNED = ("clickstream", "collector", "flusher", "stitcher", "reports", "load", "deploy")


def _formatted_values(node: ast.expr) -> list[ast.expr] | None:
    """The values interpolated into a string built by `node`, or None when it is not a built string."""
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        values = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
        return list(values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts: list[ast.expr] = []
        for side in (node.left, node.right):
            inner = _formatted_values(side)
            parts += inner if inner is not None else ([] if isinstance(side, ast.Constant) else [side])
        return parts
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return [*node.args, *(k.value for k in node.keywords)]
    return None


def _safe(value: ast.expr) -> bool:
    if isinstance(value, ast.Constant):
        return True
    if isinstance(value, ast.Name) and value.id.isupper():  # a module constant
        return True
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in SAFE_CALLS:
        return True
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in SAFE_CALLS:
        return True
    return _formatted_values(value) is not None and all(_safe(v) for v in _formatted_values(value) or [])


def sql_interpolations() -> Iterator[tuple[str, int, str]]:
    """(file, line, expression) of every value interpolated into SQL that a SQL method runs, where the
    statement is built in the call or assigned, built, to a name in the same function."""
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            tree = ast.parse(path.read_text(), rel)
            for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
                built: dict[str, ast.expr] = {}
                for node in ast.walk(func):
                    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                        built[node.targets[0].id] = node.value
                for node in ast.walk(func):
                    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr in SQL_METHODS and node.args):
                        continue
                    statement = node.args[0]
                    if isinstance(statement, ast.Name) and statement.id in built:
                        statement = built[statement.id]
                    for value in _formatted_values(statement) or []:
                        if not _safe(value):
                            yield rel, node.lineno, ast.unparse(value)


def test_no_sql_string_is_built_from_untrusted_values() -> None:
    found = list(sql_interpolations())
    untrusted = [f"{file}:{line}: {expr}" for file, line, expr in found
                 if (file, expr) not in TRUSTED and not file.startswith(tuple(TRUSTED_FILES))]
    assert not untrusted, "SQL formatted with values that may come from a request; bind them as parameters " \
                          "({name:Type} / ?) or add a reasoned entry to TRUSTED:\n" + "\n".join(untrusted)
    stale = set(TRUSTED) - {(file, expr) for file, _, expr in found}
    assert not stale, f"TRUSTED entries that no longer match any code: {stale}"
    report("privacy_sql_scan", formatted_sql_values=len(found), trusted=len(TRUSTED), untrusted=0)


def test_the_scan_finds_a_request_value_formatted_into_sql(tmp_path: Path) -> None:
    """The scanner is not blind: an f-string with a request's value feeding query() is reported."""
    code = ("def handler(client, request):\n"
            "    site = request.query_params['site']\n"
            "    sql = f\"SELECT count() FROM events WHERE site_id = '{site}'\"\n"
            "    return client.query(sql)\n"
            "def other(conn, name):\n"
            "    conn.execute('SELECT * FROM t WHERE a = %s' % name)\n")
    tree = ast.parse(code)
    hits = []
    for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        built = {n.targets[0].id: n.value for n in ast.walk(func)
                 if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
        for node in ast.walk(func):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS:
                statement = node.args[0]
                if isinstance(statement, ast.Name) and statement.id in built:
                    statement = built[statement.id]
                hits += [ast.unparse(v) for v in _formatted_values(statement) or [] if not _safe(v)]
    assert hits == ["site", "name"]


# -- secrets -------------------------------------------------------------------------------------------
SECRETS = {"CLICKSTREAM_STITCH_TOKEN": "stitch-S3CRET-4f1d9a", "CLICKSTREAM_SQL_PASSWORD": "sql-S3CRET-8be20c",
           "CLICKSTREAM_LEAD_WEBHOOK_SECRET": "hook-S3CRET-77aa01"}


def test_secrets_never_in_logs_metrics_readiness_or_setting_errors(tmp_path: Path) -> None:
    server = start_server("serve", tmp_path / "data", {
        **SECRETS, "CLICKSTREAM_LOG_LEVEL": "debug",
        "CLICKSTREAM_LEAD_WEBHOOK_URL": "http://127.0.0.1:9/unreachable",  # relay errors get logged
    })
    try:
        with server.client() as http:
            auth = {"Authorization": f"Bearer {SECRETS['CLICKSTREAM_STITCH_TOKEN']}"}
            assert http.post("/collect", json=make_event(anonymous_id="secret-v")).status_code == 202
            assert http.post("/stitch", json={"lead_id": "L-secret", "anonymous_id": "secret-v"},
                             headers=auth).status_code == 201
            assert http.post("/stitch", json={"lead_id": "L-x", "anonymous_id": "a"},
                             headers={"Authorization": "Bearer " + SECRETS["CLICKSTREAM_STITCH_TOKEN"][:-1]}
                             ).status_code == 401
            pages = [http.get("/metrics").text, http.get("/readyz").text]
        wrong = httpx.post(server.sql_url + "/?query=SELECT+1", auth=("dashboards", "nope"), timeout=30)
        assert wrong.status_code == 403 and wrong.headers["x-clickhouse-exception-code"] == "516"
        pages.append(httpx.get(server.sql_url + "/?query=SELECT+1", auth=("dashboards",
                               SECRETS["CLICKSTREAM_SQL_PASSWORD"]), timeout=30).text)
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "relay webhook" in log  # the relay did log its failed attempts
    # a bad setting while secrets are set: the error names variables, never the secrets
    try:
        Settings.from_env({**SECRETS, "CLICKSTREAM_SQL_PASSWORD": "", "CLICKSTREAM_PORT": "0",
                           "CLICKSTREAM_STITCH_TOKEN": SECRETS["CLICKSTREAM_STITCH_TOKEN"]})
        raise AssertionError("CLICKSTREAM_PORT=0 was accepted")
    except SettingsError as exc:
        pages.append(str(exc))
    cli = subprocess.run([sys.executable, "-m", "clickstream.cli", "serve", "--port", "0"], cwd=ROOT, timeout=60,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **SECRETS}, check=False)
    assert cli.returncode != 0
    pages.append(cli.stdout + cli.stderr)
    for name, secret in SECRETS.items():
        assert secret not in log, name
        assert not [p for p in pages if secret in p], name
    report("privacy_secrets", secrets=len(SECRETS), log_bytes=len(log), pages_checked=len(pages), found=0)
