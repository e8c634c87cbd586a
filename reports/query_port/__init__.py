"""The query port: ClickHouse's HTTP interface on the embedded engine (chDB), read only and bounded.

`clickstream serve` owns the embedded ClickHouse (chDB locks its directory to one process), so BI
tools (Grafana, Superset, Metabase, Redash) cannot open it themselves. The query port answers them
as a ClickHouse server does on :8123 (docs/architecture.md "HTTP", docs/dashboards.md):

    GET /, GET /ping             -> "Ok.\\n"
    GET /?query=... | POST /     -> the result in the FORMAT clause's format, else `X-ClickHouse-Format`
                                    / `default_format`, else TabSeparated
    errors                       -> "Code: N. DB::Exception: ... (NAME) (version V)" with ClickHouse's
                                    HTTP status for N and `X-ClickHouse-Exception-Code: N`

Modules, one concept each: `config` (CLICKSTREAM_SQL_*), `errors` (ClickHouse's error shape),
`request` (credentials, body, Job), `policy` (settings a client may change), `guard` (one read
statement, no file/URL/code table functions), `engine` (connections, run), `native` (Native at the
client's protocol revision), `compression`, `sessions`, `logins` (the dashboard's login cookie, accepted in place of
credentials), `limits` (concurrency), `app` (the component; `listener_app(extra_routes)` also serves
the dashboard of reports/dashboard).

Why readonly=1 in the engine while clients see readonly=2 semantics (harmless settings allowed, no
writes, readonly not lowerable, caps as upper bounds): chDB runs as clickhouse-local, whose user may
read any path, and readonly=2 allows CREATE TEMPORARY TABLE and therefore every table function:
`file('/etc/passwd')`, `url()`, `remote()`, `INSERT INTO FUNCTION file(...)` all succeed under
readonly=2 on chDB 26.9 (tests/integration/query_port/test_engine_sharing.py). readonly=1 refuses
every table function ClickHouse does not mark `allow_readonly` and any setting change in SQL; the
port applies the settings a client may change (policy) through the connection string, and its guard
refuses what readonly=1 still lets through.
"""

from reports.query_port.app import QueryPort
from reports.query_port.config import QueryPortConfig
from reports.query_port.errors import QueryPortError

__all__ = ["QueryPort", "QueryPortConfig", "QueryPortError"]
