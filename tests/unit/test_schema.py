"""The event contract (schemas/): valid JSON Schema 2020-12, fixtures that validate as labelled,
and the hot-path validator (jsonschema-rs) agreeing with python-jsonschema on every fixture and on
hypothesis-generated values.

TRICKY: JSON Schema `pattern` is ECMA-262 (2020-12 validation §6.3.3), and jsonschema-rs follows
it, but python-jsonschema runs patterns through Python's `re`, which differs on the schema's own
patterns: `$` also matches before a final "\\n" ("page_view\\n" passes) and `\\s` also matches
\\x1c-\\x1f and \\x85 but not \\ufeff. The oracle below is python-jsonschema with its `pattern`
keyword translated to ECMA-262 semantics; the stock one's divergence is pinned by a strict xfail.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from clickstream.core.resources import load_schema
from clickstream.core.schema import TOO_DEEP_MESSAGE, clip_message
from collector.validation import EventValidator
from tests.conftest import SCHEMAS_DIR

FIXTURES = SCHEMAS_DIR / "fixtures"
SCHEMA_FILES = sorted(SCHEMAS_DIR.glob("*.schema.json"))
VALID: list[dict[str, Any]] = orjson.loads((FIXTURES / "events.valid.json").read_bytes())
INVALID: list[dict[str, Any]] = orjson.loads((FIXTURES / "events.invalid.json").read_bytes())
SCHEMA = load_schema("event.schema.json")

RS = EventValidator()

# -- an ECMA-262 `pattern` for python-jsonschema ----------------------------------------------
# ECMA-262 WhiteSpace + LineTerminator (§12.2, §12.3): what `\s` means there.
_ECMA_SPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_CLASS_BODY = {"s": _ECMA_SPACE, "d": "0-9", "w": "A-Za-z0-9_"}


@functools.cache
def ecma_to_python(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 pattern (the subset the schemas use) with Python `re`.

    Raises NotImplementedError on a construct whose meaning would differ and is not translated,
    so a schema change cannot silently weaken the oracle.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1]
            low = nxt.lower()
            if low in _CLASS_BODY:
                body = _CLASS_BODY[low]
                if nxt.isupper():
                    if in_class:
                        raise NotImplementedError(f"\\{nxt} inside a class in {pattern!r}")
                    out.append(f"[^{body}]")
                else:
                    out.append(body if in_class else f"[{body}]")
            elif nxt in "bBpPu" or (nxt.isdigit() and nxt != "0"):
                raise NotImplementedError(f"\\{nxt} in {pattern!r}")
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if pattern[i + 1 : i + 2] == "]":  # a literal "]" first in a class
                out.append("\\]")
                i += 1
        elif ch == "$":
            out.append(r"\Z")  # ECMA `$` (no multiline flag): end of input only
        elif ch == ".":
            out.append("[^\n\r\u2028\u2029]")
        else:
            out.append(ch)
        i += 1
    return re.compile("".join(out))


def _ecma_pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_to_python(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


EcmaValidator = jsonschema.validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})
ORACLE = EcmaValidator(SCHEMA)
STOCK = Draft202012Validator(SCHEMA)


# -- the schema files ------------------------------------------------------------------------
def test_event_schema_is_among_the_schema_files() -> None:
    assert SCHEMAS_DIR / "event.schema.json" in SCHEMA_FILES


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    schema = orjson.loads(path.read_bytes())
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    jsonschema_rs.validator_for(schema)  # the hot path's engine compiles it too
    for pattern in _patterns(schema):
        ecma_to_python(pattern)  # every pattern is within what the oracle translates


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_every_string_and_map_of_the_event_is_bounded() -> None:
    def walk(node: dict[str, Any], where: str) -> Iterator[str]:
        if node.get("type") == "string" and "maxLength" not in node and not _bounded_pattern(node):
            yield where
        if node.get("type") == "object" and "maxProperties" not in node and node.get(
            "additionalProperties", True
        ) is not False:
            yield where
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                yield from walk(sub, f"{where}/{name}")
        for key in ("additionalProperties", "propertyNames"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], f"{where}/{key}")
        for key in ("oneOf", "anyOf"):
            for i, sub in enumerate(node.get(key, [])):
                yield from walk(sub, f"{where}/{key}/{i}")

    assert list(walk(SCHEMA, "")) == []


def _bounded_pattern(node: dict[str, Any]) -> bool:
    """An anchored pattern without unbounded repetition (`*`, `+`, `{n,}`) bounds the length."""
    pattern = node.get("pattern", "")
    return (pattern.startswith("^") and pattern.endswith("$")
            and re.search(r"(?<!\\)[*+]|\{\d+,\}", pattern) is None)


# -- fixtures ---------------------------------------------------------------------------------
def test_fixture_files_are_large_and_uniquely_named() -> None:
    names = [f["name"] for f in VALID + INVALID]
    assert len(VALID) >= 15 and len(INVALID) >= 25
    assert len(names) == len(set(names))
    for fixture in INVALID:
        assert set(fixture["error"]) == {"path", "message_contains"}, fixture["name"]


def test_invalid_fixtures_touch_every_property_of_the_event() -> None:
    touched = {f["error"]["path"].split("/")[1] for f in INVALID if f["error"]["path"]}
    touched |= {f["name"].removeprefix("missing_") for f in INVALID if f["name"].startswith("missing_")}
    assert set(SCHEMA["properties"]) <= touched, set(SCHEMA["properties"]) - touched


@pytest.mark.parametrize("fixture", VALID, ids=[f["name"] for f in VALID])
def test_valid_fixture(fixture: dict[str, Any]) -> None:
    event = fixture["event"]
    assert RS.is_valid(event)
    assert RS.errors(event) == []
    assert ORACLE.is_valid(event)
    assert STOCK.is_valid(event)


@pytest.mark.parametrize("fixture", INVALID, ids=[f["name"] for f in INVALID])
def test_invalid_fixture(fixture: dict[str, Any]) -> None:
    event, expected = fixture["event"], fixture["error"]
    assert not RS.is_valid(event)
    first = RS.first_error(event)
    assert first is not None
    path, message = first
    assert path == expected["path"]
    assert expected["message_contains"] in message, message
    assert not ORACLE.is_valid(event)


# Values on which Python `re` and ECMA-262 read the schema's patterns differently.
REGEX_DIALECT_EDGES = [
    {"type": "page_view\n"},
    {"site_id": "example.com\n"},
    {"ts": "2023-11-14T22:13:20Z\n"},
    {"url": "https://\x1cexample.com/"},
    {"url": "https://\x85example.com/"},
    {"url": "https://\ufeffexample.com/"},
]


@pytest.mark.parametrize("change", REGEX_DIALECT_EDGES, ids=repr)
def test_hot_path_and_oracle_agree_on_regex_dialect_edges(change: dict[str, Any]) -> None:
    event = {**VALID[0]["event"], **change}
    assert RS.is_valid(event) == ORACLE.is_valid(event)


@pytest.mark.xfail(strict=True, reason="schema patterns use `$` and `\\s`, which Python re reads differently "
                   "from ECMA-262; make them dialect-neutral, then drop this marker")
def test_stock_python_jsonschema_agrees_on_regex_dialect_edges() -> None:
    events = [{**VALID[0]["event"], **change} for change in REGEX_DIALECT_EDGES]
    assert [RS.is_valid(e) for e in events] == [STOCK.is_valid(e) for e in events]


def test_too_deep_value_is_invalid_not_an_exception() -> None:
    deep: Any = []
    for _ in range(1000):  # orjson decodes up to 1024 levels; jsonschema-rs stops earlier
        deep = [deep]
    event = {**VALID[0]["event"], "props": {"k": deep}}
    assert not RS.is_valid(event)
    assert RS.errors(event) == [("", TOO_DEEP_MESSAGE)]
    assert not RS.is_valid(deep)


def test_long_messages_keep_their_reason() -> None:
    event = {**VALID[0]["event"], "title": "t" * 5000}
    path, message = RS.first_error(event) or ("", "")
    assert path == "/title"
    assert len(message) <= 240 and message.endswith("is longer than 512 characters")
    assert clip_message("short") == "short"
    clipped = clip_message("a" * 100 + "b" * 100, limit=21)
    assert clipped == "a" * 10 + "…" + "b" * 10


# -- hypothesis: agreement on generated values ------------------------------------------------
EDGE_CHARS = "\n\r\t \x00\x1c\x1f\x85\xa0\ufeff\u2028\u3000/?#:.-_~%é日Aa0zZ9"
chars = st.one_of(st.sampled_from(EDGE_CHARS), st.characters(codec="utf-8"))
small_text = st.text(chars, max_size=12)

scalars = (
    st.none() | st.booleans() | small_text
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -1, 1.0, -0.0, 1.5, 253402300799999, 253402300800000, 100000, 100001])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(small_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def near_bound_text(draw: st.DrawFn, bound: int) -> str:
    """A string whose length is at or next to `bound`, from one repeated char plus edge chars."""
    length = draw(st.sampled_from([0, 1, max(bound - 1, 0), bound, bound + 1]))
    base = draw(st.sampled_from("aZ0_.-:"))
    text = list(base * length)
    for _ in range(draw(st.integers(0, 2))):
        if text:
            text[draw(st.integers(0, len(text) - 1))] = draw(chars)
    return "".join(text)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    y, mo, d = draw(st.integers(0, 9999)), draw(st.integers(0, 13)), draw(st.integers(0, 32))
    h, mi, s = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
    sep = draw(st.sampled_from("Tt x"))
    frac = draw(st.sampled_from(["", "."])) + draw(st.text("0123456789", max_size=11))
    tz = draw(st.sampled_from(["Z", "z", "", "+00:00", "-05:30", "+24:00", "+5:00", "Z\n"]))
    return f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{tz}"


@st.composite
def big_map(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.sampled_from([0, 1, 31, 32, 33]))
    keys = draw(st.lists(st.one_of(near_bound_text(64), small_text), min_size=n, max_size=n, unique=True))
    value = st.one_of(near_bound_text(64), near_bound_text(512), scalars)
    return {k: draw(value) for k in keys}


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "type": st.one_of(near_bound_text(64), st.sampled_from(["page_view", "click", "a1_b", "A", "_x"])),
    "site_id": near_bound_text(128),
    "anonymous_id": near_bound_text(128),
    "session_id": near_bound_text(128),
    "ts": st.one_of(rfc3339(), scalars),
    "url": st.one_of(
        near_bound_text(2048),
        st.builds(lambda scheme, host, rest: scheme + host + rest,
                  st.sampled_from(["http://", "https://", "ftp://", "HTTPS://", ""]), small_text, small_text),
    ),
    "event_id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper() + "\n"), small_text),
    "referrer": near_bound_text(2048),
    "title": near_bound_text(512),
    "lang": near_bound_text(35),
    "utm": st.dictionaries(st.sampled_from(["source", "medium", "campaign", "term", "content", "id"]),
                           st.one_of(near_bound_text(256), scalars), max_size=6),
    "variants": big_map(),
    "props": big_map(),
    "consent": st.sampled_from(["pending", "granted", "", None, 1]),
    "screen": st.dictionaries(st.sampled_from(["w", "h", "dpr"]),
                              st.sampled_from([-1, 0, 1, 1.0, 1.5, 100000, 100001, "1", None]), max_size=3),
}


@st.composite
def near_valid_events(draw: st.DrawFn) -> Any:
    """A valid fixture with one to three fields dropped, replaced or added."""
    event = copy.deepcopy(draw(st.sampled_from(VALID))["event"])
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(sorted(FIELD_VALUES)))
        action = draw(st.sampled_from(["set", "set", "set", "drop", "any", "extra"]))
        if action == "drop":
            event.pop(field, None)
        elif action == "set":
            event[field] = draw(FIELD_VALUES[field])
        elif action == "any":
            event[field] = draw(json_values)
        else:
            event[draw(small_text)] = draw(scalars)
    return event


def _as_received(value: Any) -> Any:
    """`value` after a JSON round trip: what the collector would decode from a body."""
    return orjson.loads(orjson.dumps(value))


def _assert_agree(value: Any) -> None:
    value = _as_received(value)
    rs_valid = RS.is_valid(value)
    assert rs_valid == ORACLE.is_valid(value), (value, RS.errors(value))
    assert (RS.errors(value) == []) == rs_valid


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_events())
def test_validators_agree_on_near_valid_events(event: Any) -> None:
    _assert_agree(event)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_validators_agree_on_arbitrary_json(value: Any) -> None:
    _assert_agree(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(near_valid_events(), st.sampled_from(VALID).map(lambda f: f["event"])), max_size=8))
def test_batch_check_agrees_with_per_event_checks(events: list[Any]) -> None:
    events = _as_received(events)
    assert RS.all_valid(events) == all(RS.is_valid(e) for e in events)
