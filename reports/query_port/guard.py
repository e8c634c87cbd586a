"""The statement guard: what runs is one read statement, checked on the engine's own parse.

readonly=1 (what the engine enforces, see reports/query_port/__init__.py) still lets through, on
chDB 26.9: the scalar `file()` (reads any path), `SELECT … INTO OUTFILE` (writes one), global
`SYSTEM STOP MERGES`, `KILL QUERY` (every connection is user `default`: it would kill the flusher's
inserts), the `eval()` table function, and a multi-statement text (chDB runs every statement).
The guard closes those:

1. `formatQuery()` of the client's text (passed as a query parameter, never spliced) proves it is
   one statement (code 62 otherwise) and gives the normalized text that will run;
2. the statement kind must be a read (SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN; else 164),
   without INTO OUTFILE (358); SET and USE go to the session;
3. `EXPLAIN AST` of it must not call `file()` anywhere, nor a table function outside
   ALLOWED_TABLE_FUNCTIONS (497), and must add up node by node (a truncated dump cannot hide a call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from reports.query_port.errors import (
    ACCESS_DENIED,
    BAD_ARGUMENTS,
    INTO_OUTFILE_NOT_ALLOWED,
    READONLY,
    QueryPortError,
    error,
)

#: Statements a dashboard may run (formatted first keyword). SET and USE are handled by the port.
READ_STATEMENTS: Final = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "EXISTS", "EXPLAIN"})
SESSION_STATEMENTS: Final = frozenset({"SET", "USE"})

#: Table functions the port allows: the generators and views ClickHouse marks `allow_readonly`
#: (system.table_functions), minus `eval` (runs a SELECT built from a string the guard cannot see),
#: `input`, `cluster*` and the MergeTree introspection functions.
ALLOWED_TABLE_FUNCTIONS: Final = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "view", "viewifpermitted", "merge", "null",
    "generaterandom", "generate_series", "generateseries", "primes",
})

#: Functions the port refuses anywhere in a query. `file()` reads any path on chDB: clickhouse-local
#: has no user_files_path restriction, and readonly does not cover functions (chDB 26.9).
DENIED_FUNCTIONS: Final = frozenset({"file"})

#: Runs one SQL text on a guard connection and returns its TabSeparatedRaw output. `params` are
#: ClickHouse query parameters in their wire form (TSV-escaped, as `param_<name>` URL values).
Fetch = Callable[[str, Mapping[str, str]], str]

_AST_LINE = re.compile(r"^( *)(\S.*)$")
_AST_FUNCTION = re.compile(r"^Function (\S+)")
_AST_CHILDREN = re.compile(r"\(children (\d+)\)$")
_IN_SCOPE = re.compile(r":? In scope SELECT formatQuery\(.*\)\. \(", re.DOTALL)


class Statement(NamedTuple):
    """A statement after formatQuery: `kind` (first keyword), `sql` (what will run, without its
    FORMAT clause), `format` (the FORMAT clause's name or None), `into_outfile`."""

    kind: str
    sql: str
    format: str | None
    into_outfile: bool


def check_statement(fetch: Fetch, text: str, params: Mapping[str, str], table_functions: frozenset[str]) -> Statement:
    """The statement that will run for the client's `text`, checked (steps 1-3 of the module doc).

    `table_functions`: the engine's table function names, lower case (system.table_functions).
    Raises QueryPortError: the engine's parse error (62), 164, 358 or 497.
    """
    statement = parse_formatted(format_query(fetch, text))
    if statement.kind in SESSION_STATEMENTS:
        return statement
    if statement.kind not in READ_STATEMENTS:
        raise error(READONLY, "Cannot execute query in readonly mode")
    if statement.into_outfile:
        raise error(INTO_OUTFILE_NOT_ALLOWED, "INTO OUTFILE is not allowed")
    check_ast(fetch(f"EXPLAIN AST {statement.sql}", params), table_functions)
    return statement


def format_query(fetch: Fetch, text: str) -> str:
    """formatQuery() of `text`: the engine's parser proves it is one statement (code 62
    "Multi-statements are not allowed" otherwise) and normalizes it."""
    try:
        formatted = fetch("SELECT formatQuery({q:String})", {"q": escape_param(text)})
    except RuntimeError as exc:
        # The error names our wrapper ("In scope SELECT formatQuery(...)"): report the client's query.
        raise QueryPortError.from_engine(RuntimeError(_IN_SCOPE.sub(". (", str(exc).strip()))) from None
    return formatted.removesuffix("\n")


def parse_formatted(formatted: str) -> Statement:
    """Split formatQuery() output. Its top-level clauses start at column 0 on their own line and its
    string literals never contain a raw line break (verified on chDB 26.9), so `FORMAT x` and
    `INTO OUTFILE ...` are found as whole lines."""
    fmt: str | None = None
    into_outfile = False
    kept = []
    for line in formatted.rstrip("\n").split("\n"):
        if line.startswith("FORMAT ") and " " not in line[7:].strip():
            fmt = line[7:].strip()
            continue
        if line.startswith("INTO OUTFILE "):
            into_outfile = True
        kept.append(line)
    sql = "\n".join(kept)
    match = re.match(r"\s*([A-Za-z]+)", sql)
    return Statement(match.group(1).upper() if match else "", sql, fmt, into_outfile)


def check_ast(ast: str, table_functions: frozenset[str]) -> None:
    """Refuse denied functions and table functions outside the allowlist, anywhere in the tree
    (subqueries, CTEs, view(...), EXPLAIN's inner query).

    `ast` is `EXPLAIN AST` output: one node per line, indented one space per level; a `Function`
    under `TableExpression` is a table function when its name is one (`table_functions`, lower
    case), else a parameterized view (`v(site = 'x')`), which reads the database like any view.
    Raises QueryPortError 497 ACCESS_DENIED.
    """
    parents: list[str] = []
    declared: list[int] = []  # "(children N)" of each node on the current path
    seen: list[int] = []  # children met so far, same positions
    roots = 0
    for raw in ast.splitlines():
        match = _AST_LINE.match(raw)
        if not match:
            continue
        depth, node = len(match.group(1)), match.group(2)
        if depth > len(parents):
            raise _incomplete_ast()
        while len(parents) > depth:
            _close_node(declared, seen)
            parents.pop()
        if seen:
            seen[-1] += 1
        else:
            roots += 1
        function = _AST_FUNCTION.match(node)
        if function:
            _check_function(function.group(1), parents[-1] if parents else "", table_functions)
        parents.append(node)
        children = _AST_CHILDREN.search(node)
        declared.append(int(children.group(1)) if children else 0)
        seen.append(0)
    while parents:
        _close_node(declared, seen)
        parents.pop()
    if roots != 1:
        raise _incomplete_ast()


def _check_function(name: str, parent: str, table_functions: frozenset[str]) -> None:
    lower = name.lower()
    if lower in DENIED_FUNCTIONS:
        raise error(ACCESS_DENIED, f"The query port does not allow function {name}")
    if parent.startswith("TableExpression") and lower in table_functions and lower not in ALLOWED_TABLE_FUNCTIONS:
        raise error(ACCESS_DENIED, f"The query port does not allow table function {name} "
                                   "(it reads files, URLs, other servers or runs code)")


def _close_node(declared: list[int], seen: list[int]) -> None:
    if declared.pop() != seen.pop():
        raise _incomplete_ast()


def _incomplete_ast() -> QueryPortError:
    # Every node states its children count; a dump that does not add up was cut or is not understood.
    return error(ACCESS_DENIED, "The query port could not verify the query's syntax tree")


def escape_param(value: str) -> str:
    """A string as a ClickHouse query parameter value (parsed in TSV "escaped" format, as `param_x`
    URL values are: clickhouse.com/docs/interfaces/http "Tabs in URL Parameters")."""
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\0", "\\0"))


def quote_identifier(name: str) -> str:
    """`name` as a backquoted ClickHouse identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


_SET_ITEM = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=\s*('(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*))?\s*(,|$)",
    re.DOTALL)


def parse_set(sql: str) -> list[tuple[str, str]]:
    """`SET a = 1, b = 'x'` (formatted) -> [("a", "1"), ("b", "x")]. Only literals; `SET ROLE`,
    `SET DEFAULT ROLE` and expressions raise QueryPortError 164 / 36."""
    rest = sql.strip()[3:].strip()
    if re.match(r"(?i)(DEFAULT\s+)?ROLE\b|TRANSACTION\b", rest):
        raise error(READONLY, "Cannot execute query in readonly mode")
    items: list[tuple[str, str]] = []
    pos = 0
    while pos < len(rest):
        match = _SET_ITEM.match(rest, pos)
        if not match or match.end() == pos:
            raise error(BAD_ARGUMENTS, "The query port accepts SET with literal values only")
        name, value = match.group(1), match.group(2)
        if value is None:
            value = "1"
        elif value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        items.append((name, value))
        pos = match.end()
    return items


def parse_use(sql: str) -> str:
    """`USE db` or ``USE `d b` `` (formatted) -> the database name."""
    rest = sql.strip()[3:].strip()
    if rest.startswith("`") and rest.endswith("`"):
        return re.sub(r"\\(.)", r"\1", rest[1:-1])
    return rest
