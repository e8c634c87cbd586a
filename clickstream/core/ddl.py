"""What a migration statement is: its kind, the object it names, engine, settings, table references.

Read from tokens (sqlglot's ClickHouse tokenizer: it skips comments and keeps string literals,
quoted identifiers and `{name:Type}` query parameters whole, each token with its character
span), not from regular expressions over the text, so a `FROM` inside a string, a comment or a
parameter name is never taken for a table reference. Rewrites are edits at token spans
(`apply_edits`), which keeps the rest of a statement byte for byte.

Used by `clickstream.core.cluster` (a migration rendered for a ClickHouse cluster) and by
`clickstream.core.clickhouse.check_guarantees` (which tables a materialized view writes to).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from sqlglot import Token, TokenType
from sqlglot.dialects.clickhouse import ClickHouse

_DIALECT = ClickHouse()
_NAME_TYPES = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


class UnsupportedStatement(ValueError):
    """A statement this module cannot classify (the message names it and says what is supported)."""


@dataclasses.dataclass(frozen=True)
class Span:
    """Characters [start, end) of a statement's text."""

    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Ref:
    """A table reference: `name` (unqualified), `database` when written, and its span in the text."""

    name: str
    database: str | None
    span: Span


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a migration.

    `kind`: `table`, `materialized_view`, `view`, `function`, `dictionary`, `database`, `alter`,
    `drop`, `insert`, `optimize`, `truncate`. `name` is the object created, altered or dropped
    (unqualified), `name_span` where it is written (ON CLUSTER goes right after it); `target` is the
    `TO` table of a materialized view.
    """

    kind: str
    text: str
    tokens: tuple[Token, ...]
    name: Ref
    target: Ref | None = None

    # -- parts of a CREATE TABLE ---------------------------------------------------------------
    def engine(self) -> tuple[str, Span, Span | None] | None:
        """(engine name, span of the name, span of its argument list incl. parentheses) or None."""
        toks = self.tokens
        for i in _depth0(toks):
            if toks[i].text.upper() == "ENGINE":
                j = i + 1
                if j < len(toks) and toks[j].token_type == TokenType.EQ:
                    j += 1
                if j >= len(toks):
                    return None
                name_tok = toks[j]
                args = None
                if j + 1 < len(toks) and toks[j + 1].token_type == TokenType.L_PAREN:
                    close = _matching(toks, j + 1)
                    args = Span(toks[j + 1].start, toks[close].end + 1)
                return name_tok.text, Span(name_tok.start, name_tok.end + 1), args
        return None

    def settings(self) -> tuple[dict[str, str], Span] | None:
        """The table-level SETTINGS clause as {name: value text} and its span (to the end), or None."""
        toks = self.tokens
        after_engine = False
        for i in _depth0(toks):
            word = toks[i].text.upper()
            after_engine = after_engine or word == "ENGINE"
            if word == "SETTINGS" and after_engine:
                values: dict[str, str] = {}
                j = i + 1
                while j + 2 < len(toks) and toks[j + 1].token_type == TokenType.EQ:
                    k = j + 2
                    while k + 1 < len(toks) and toks[k + 1].token_type != TokenType.COMMA:
                        k += 1
                    values[toks[j].text] = self.text[toks[j + 2].start : toks[k].end + 1]
                    j = k + 2
                return values, Span(toks[i].start, len(self.text))
        return None

    def columns(self) -> list[str]:
        """Column names of a CREATE TABLE's column list (indexes, projections, constraints left out)."""
        toks = self.tokens
        open_at = next((i for i, t in enumerate(toks) if t.token_type == TokenType.L_PAREN
                        and toks[i - 1].start >= self.name.span.start), None)
        if open_at is None:
            return []
        close = _matching(toks, open_at)
        names, depth, expect = [], 0, True
        for tok in toks[open_at + 1 : close]:
            if tok.token_type == TokenType.L_PAREN:
                depth += 1
            elif tok.token_type == TokenType.R_PAREN:
                depth -= 1
            elif depth == 0 and tok.token_type == TokenType.COMMA:
                expect = True
                continue
            if expect and depth == 0:
                if tok.text.upper() not in ("INDEX", "PROJECTION", "CONSTRAINT"):
                    names.append(tok.text)
                expect = False
        return names

    def order_by(self) -> str | None:
        """The text of a CREATE TABLE's ORDER BY expression (up to the next clause), or None."""
        toks = self.tokens
        clauses = {"PARTITION", "PRIMARY", "SAMPLE", "TTL", "SETTINGS", "COMMENT"}
        for i in _depth0(toks):
            if toks[i].token_type == TokenType.ORDER_BY or (
                    toks[i].text.upper() == "ORDER" and i + 1 < len(toks) and toks[i + 1].text.upper() == "BY"):
                j = i + 1 if toks[i].token_type == TokenType.ORDER_BY else i + 2
                end, depth = j, 0
                for k in range(j, len(toks)):
                    kind = toks[k].token_type
                    depth += (kind == TokenType.L_PAREN) - (kind == TokenType.R_PAREN)
                    if depth == 0 and k > j and toks[k].text.upper() in clauses:
                        break
                    end = k
                return self.text[toks[j].start : toks[end].end + 1]
        return None

    def table_refs(self) -> list[Ref]:
        """Tables read after FROM / JOIN (ARRAY JOIN, table functions, subqueries and `{from:Type}`
        parameters left out), in text order."""
        toks = self.tokens
        refs = []
        for i, tok in enumerate(toks):
            if tok.token_type not in (TokenType.FROM, TokenType.JOIN):
                continue
            if i > 0 and toks[i - 1].token_type == TokenType.L_BRACE:  # {from:Date}
                continue
            if tok.token_type == TokenType.JOIN and i > 0 and toks[i - 1].token_type == TokenType.ARRAY:
                continue
            ref = _qualified_name(toks, i + 1)
            if ref is None:
                continue
            after = _index_after(toks, ref.span.end)
            if after is not None and toks[after].token_type == TokenType.L_PAREN:  # a table function
                continue
            refs.append(ref)
        return refs


def tokenize(text: str) -> tuple[Token, ...]:
    return tuple(_DIALECT.tokenize(text))


def is_empty(text: str) -> bool:
    """True for a statement of comments only (what `split_statements` leaves after the last `;`)."""
    return not tokenize(text)


def parse(text: str) -> Statement:
    """Classify one statement. Raises UnsupportedStatement for a kind not listed on `Statement`."""
    toks = tokenize(text)
    words = [t.text.upper() for t in toks]
    if not toks:
        raise UnsupportedStatement("empty statement")

    def name_from(i: int) -> tuple[Ref, int]:
        while i < len(toks) and words[i] in ("IF", "NOT", "EXISTS"):
            i += 1
        ref = _qualified_name(toks, i)
        if ref is None:
            raise UnsupportedStatement(f"no object name in: {text[:80]}")
        next_i = _index_after(toks, ref.span.end)
        next_i = len(toks) if next_i is None else next_i
        if words[next_i : next_i + 2] == ["ON", "CLUSTER"]:
            next_i += 3
        return ref, next_i

    head = words[0]
    if head == "CREATE":
        i = 1
        if words[i : i + 2] == ["OR", "REPLACE"]:
            i += 2
        if words[i] == "TEMPORARY":
            raise UnsupportedStatement(f"temporary tables are not migrations: {text[:80]}")
        kinds = {"TABLE": "table", "VIEW": "view", "FUNCTION": "function", "DICTIONARY": "dictionary",
                 "DATABASE": "database"}
        if words[i] == "MATERIALIZED" and words[i + 1] == "VIEW":
            name, j = name_from(i + 2)
            target = None
            if j < len(toks) and words[j] == "TO":
                target = _qualified_name(toks, j + 1)
            return Statement("materialized_view", text, toks, name, target)
        if words[i] in kinds:
            name, _ = name_from(i + 1)
            return Statement(kinds[words[i]], text, toks, name)
    elif head == "ALTER" and words[1] == "TABLE":
        return Statement("alter", text, toks, name_from(2)[0])
    elif head == "DROP" and words[1] in ("TABLE", "VIEW", "FUNCTION", "DICTIONARY"):
        return Statement("drop", text, toks, name_from(2)[0])
    elif head == "INSERT" and words[1] == "INTO":
        j = 3 if words[2] == "TABLE" else 2
        return Statement("insert", text, toks, name_from(j)[0])
    elif head == "OPTIMIZE" and words[1] == "TABLE":
        return Statement("optimize", text, toks, name_from(2)[0])
    elif head == "TRUNCATE":
        return Statement("truncate", text, toks, name_from(2 if words[1] == "TABLE" else 1)[0])
    raise UnsupportedStatement(
        f"cannot classify statement {text[:80]!r}: supported are CREATE TABLE / [MATERIALIZED] VIEW / FUNCTION / "
        "DICTIONARY / DATABASE, ALTER TABLE, DROP, INSERT INTO, OPTIMIZE TABLE, TRUNCATE")


def call_args(text: str) -> list[str]:
    """The arguments of the first call in `text` as written: `Distributed('c', 'db', 't', key)` ->
    ["'c'", "'db'", "'t'", "key"] (string literals keep their quotes); [] without parentheses."""
    toks = tokenize(text)
    open_at = next((i for i, t in enumerate(toks) if t.token_type == TokenType.L_PAREN), None)
    if open_at is None:
        return []
    close = _matching(toks, open_at)
    args, start, depth = [], open_at + 1, 0
    for i in range(open_at + 1, close + 1):
        kind = toks[i].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN and i < close:
            depth -= 1
        elif (kind == TokenType.COMMA and depth == 0) or i == close:
            if i > start:
                args.append(text[toks[start].start : toks[i - 1].end + 1])
            start = i + 1
    return args


def apply_edits(text: str, edits: Iterable[tuple[Span, str]]) -> str:
    """`text` with each span replaced (spans must not overlap)."""
    out = text
    for span, replacement in sorted(edits, key=lambda e: e[0].start, reverse=True):
        out = out[: span.start] + replacement + out[span.end :]
    return out


def quote_name(name: str) -> str:
    """An identifier as ClickHouse reads it: bare when it is a plain word, else backquoted."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else "`" + name.replace("`", "``") + "`"


# -- token helpers ---------------------------------------------------------------------------
def _matching(toks: Sequence[Token], open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(toks)):
        if toks[i].token_type == TokenType.L_PAREN:
            depth += 1
        elif toks[i].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return i
    raise UnsupportedStatement("unbalanced parentheses")


def _depth0(toks: Sequence[Token], start: int = 0) -> Iterable[int]:
    depth = 0
    for i in range(start, len(toks)):
        kind = toks[i].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0:
            yield i


def _qualified_name(toks: Sequence[Token], i: int) -> Ref | None:
    """`name` or `db.name` starting at token i (any word: ClickHouse lets keywords name tables)."""
    if i >= len(toks) or toks[i].token_type in (TokenType.L_PAREN, TokenType.L_BRACE, TokenType.STRING):
        return None
    first = toks[i]
    if i + 2 < len(toks) and toks[i + 1].token_type == TokenType.DOT:
        second = toks[i + 2]
        return Ref(second.text, first.text, Span(first.start, second.end + 1))
    return Ref(first.text, None, Span(first.start, first.end + 1))


def _index_after(toks: Sequence[Token], end: int) -> int | None:
    for i, tok in enumerate(toks):
        if tok.start >= end:
            return i
    return None
