"""Versioned event schemas and custom event schemas (collector.schemas, docs/schema-versioning.md):
which version an event is checked against, the upcast to the current shape, the rejection of
versions that are not accepted, and custom props schemas, all through `collector.pipeline.process`
(what `POST /collect` and `clickstream import` run)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.pipeline import Outcome, process
from collector.schemas import ID_PREFIX, EventSchemas, SchemaLoadError, bundled_versions, load_custom_schemas, schemaver
from collector.validation import RejectReason
from tests.conftest import SCHEMAS_DIR

NOW = 1_800_000_000_000
SCHEMAS = EventSchemas()


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "page_view", "site_id": "example.com", "anonymous_id": "a1", "session_id": "s1",
                            "ts": NOW - 1000, "url": "https://example.com/pricing", "title": "Pricing"}
    base.update(overrides)
    return base


def run(events: list[Any], schemas: EventSchemas = SCHEMAS) -> Outcome:
    return process(events, schemas, received_at_ms=NOW, user_agent="UA", ip_hash="", max_age_ms=3_600_000,
                   max_skew_ms=300_000)


def spooled(outcome: Outcome) -> list[dict[str, Any]]:
    return [orjson.loads(r) for r in outcome.records]


# -- the files ----------------------------------------------------------------------------------
def test_every_version_file_carries_its_version_and_the_current_is_event_schema_json() -> None:
    files = sorted((SCHEMAS_DIR / "event").glob("*.json"))
    versions = {p.stem: json.loads(p.read_text()) for p in files}
    assert {"1-0-0", "1-1-0"} <= set(versions)
    for version, schema in versions.items():
        schemaver(version)
        assert schema["$id"] == f"{ID_PREFIX}{version}.json"
        assert schema["properties"]["schema"]["enum"] == [f"event/{version}", schema["$id"]]
    newest = max(versions, key=schemaver)
    # the name every other reader loads (load/, import, tests, docs) is the current version, byte for byte
    assert (SCHEMAS_DIR / "event.schema.json").read_bytes() == (SCHEMAS_DIR / "event" / f"{newest}.json").read_bytes()
    assert bundled_versions() == versions  # what the package ships is what the repository holds
    assert SCHEMAS.current.version == newest and SCHEMAS.oldest.version == min(versions, key=schemaver)


def test_1_1_0_is_1_0_0_plus_seq() -> None:
    old, new = bundled_versions()["1-0-0"], bundled_versions()["1-1-0"]
    described = "the client's per-session event counter (beacon.js), orders events with equal ts"
    assert new["properties"]["seq"] == {"type": "integer", "minimum": 0, "maximum": 4294967295,
                                        "description": described}
    strip = {"$id", "title", "description"}
    old_props = {k: v for k, v in old["properties"].items() if k != "schema"}
    new_props = {k: v for k, v in new["properties"].items() if k not in ("schema", "seq")}
    assert old_props == new_props
    assert {k: v for k, v in old.items() if k not in strip | {"properties"}} == \
        {k: v for k, v in new.items() if k not in strip | {"properties"}}


# -- versions through the pipeline --------------------------------------------------------------
@pytest.mark.parametrize("named", [None, "event/1-0-0", f"{ID_PREFIX}1-0-0.json"])
def test_an_old_event_is_accepted_and_spooled_in_the_current_shape(named: str | None) -> None:
    sent = event() if named is None else event(schema=named)
    out = run([sent])
    assert not out.errors
    [row] = spooled(out)
    assert "schema" not in row
    assert {k: v for k, v in row.items() if k != "event_id"} == {k: v for k, v in event().items()}
    assert SCHEMAS.current.validator.is_valid(row)


def test_a_current_event_keeps_seq_and_loses_only_its_schema_field() -> None:
    out = run([event(schema="event/1-1-0", seq=7), event(schema=f"{ID_PREFIX}1-1-0.json", seq=8)])
    assert not out.errors
    assert [(r["seq"], "schema" in r) for r in spooled(out)] == [(7, False), (8, False)]


def test_an_unversioned_event_using_seq_is_the_version_that_added_it() -> None:
    out = run([event(seq=3), event()])
    assert not out.errors and spooled(out)[0]["seq"] == 3
    assert out.versions == {"1-1-0": 1, "1-0-0": 1}


def test_a_1_0_0_event_cannot_use_a_later_field() -> None:
    out = run([event(schema="event/1-0-0", seq=3)])
    [error] = out.errors
    assert (error.reason, error.path) == (RejectReason.SCHEMA_VIOLATION, "")
    assert "seq" in error.message


@pytest.mark.parametrize("named", ["event/2-0-0", "event/0-9-0", "event/1-1", "iglu:x/event/jsonschema/1-0-0",
                                   f"{ID_PREFIX}9-9-9.json", 5, "event/latest", ["event/1-0-0"]])
def test_a_version_not_accepted_is_rejected_and_kept_as_sent(named: Any) -> None:
    sent = event(schema=named)
    kept = copy.deepcopy(sent)
    out = run([event(), sent])
    assert len(out.records) == 1
    [error] = out.errors
    assert (error.index, error.path, error.reason) == (1, "/schema", RejectReason.UNSUPPORTED_SCHEMA_VERSION)
    assert "event/1-0-0, event/1-1-0" in error.message
    [entry] = out.rejected_entries
    assert entry["event"] == kept and entry["reason"] == "unsupported_schema_version"


def test_a_rejected_event_is_left_as_sent_even_after_passing_its_schema() -> None:
    sent = event(schema="event/1-0-0", ts=NOW - 10 * 3_600_000)  # valid 1-0-0, too old for the clock policy
    out = run([sent])
    [entry] = out.rejected_entries
    assert entry["reason"] == "ts_too_old" and entry["event"]["schema"] == "event/1-0-0"


def test_batches_of_one_version_and_of_mixed_versions_agree_with_one_by_one() -> None:
    batches = [
        [event(event_id=f"00000000-0000-4000-8000-{i:012d}", schema="event/1-1-0", seq=i) for i in range(5)],
        [event(event_id=f"00000000-0000-4000-8000-{i:012d}", **({"schema": "event/1-0-0"} if i % 2 else {}))
         for i in range(5)],
        [event(event_id=f"00000000-0000-4000-8000-{i:012d}",
               schema=["event/1-1-0", "event/1-0-0", "event/7-0-0"][i % 3]) for i in range(6)],
    ]
    for batch in batches:
        together = run(copy.deepcopy(batch))
        alone = [run([copy.deepcopy(e)]) for e in batch]
        assert together.records == [r for o in alone for r in o.records]
        assert [(e.path, e.reason) for e in together.errors] == [(e.path, e.reason) for o in alone for e in o.errors]
        summed: dict[str, int] = {}
        for o in alone:
            for version, n in o.versions.items():
                summed[version] = summed.get(version, 0) + n
        assert together.versions == summed and sum(summed.values()) == len(together.records)


# -- an upcast that changes something: a test-only version 2-0-0 --------------------------------
def _v2_schema() -> dict[str, Any]:
    """2-0-0 (MODEL change, for this test only): `title` renamed to `page_title`."""
    schema = copy.deepcopy(bundled_versions()["1-1-0"])
    schema["$id"] = f"{ID_PREFIX}2-0-0.json"
    props = schema["properties"]
    props["page_title"] = props.pop("title")
    props["schema"] = {"enum": ["event/2-0-0", schema["$id"]]}
    return schema


def _rename_title(e: dict[str, Any]) -> None:
    if "title" in e:
        e["page_title"] = e.pop("title")


def test_upcasters_chain_from_any_accepted_version_to_the_current_one() -> None:
    schemas = EventSchemas({**bundled_versions(), "2-0-0": _v2_schema()}, {"1-0-0": None, "1-1-0": _rename_title})
    out = run([event(), event(schema="event/2-0-0")], schemas)
    assert [(e.index, e.reason) for e in out.errors] == [(1, RejectReason.SCHEMA_VIOLATION)]  # 2-0-0 has no `title`
    v2 = event(schema="event/2-0-0")
    v2["page_title"] = v2.pop("title")
    out = run([event(), event(schema="event/1-1-0", seq=1), v2], schemas)
    assert not out.errors
    rows = spooled(out)
    assert [r.get("page_title") for r in rows] == ["Pricing"] * 3
    assert all("title" not in r and "schema" not in r for r in rows)
    assert all(schemas.current.validator.is_valid(r) for r in rows)


def test_a_version_without_its_upcaster_or_with_a_wrong_id_does_not_load() -> None:
    with pytest.raises(SchemaLoadError, match="no upcaster"):
        EventSchemas({**bundled_versions(), "2-0-0": _v2_schema()}, {"1-0-0": None})
    wrong = _v2_schema()
    wrong["$id"] = f"{ID_PREFIX}2-0-1.json"
    with pytest.raises(SchemaLoadError, match=r"\$id"):
        EventSchemas({"2-0-0": wrong})
    with pytest.raises(SchemaLoadError, match="SchemaVer"):
        EventSchemas({"v2": wrong})


def test_retiring_the_oldest_version_makes_unversioned_events_the_next() -> None:
    schemas = EventSchemas({"1-1-0": bundled_versions()["1-1-0"]})
    out = run([event(), event(schema="event/1-0-0")], schemas)
    assert len(out.records) == 1
    assert [(e.index, e.reason) for e in out.errors] == [(1, RejectReason.UNSUPPORTED_SCHEMA_VERSION)]


# -- custom event schemas -----------------------------------------------------------------------
SIGNUP = {"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}}


def custom_dir(tmp_path: Path, files: dict[str, Any]) -> Path:
    folder = tmp_path / "custom"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def test_custom_props_schema_rejects_bad_props_with_the_same_error_shape(tmp_path: Path) -> None:
    schemas = EventSchemas.from_settings(custom_dir(tmp_path, {"signup_started.json": SIGNUP}))
    events = [
        event(type="signup_started", props={"plan": "pro"}),
        event(type="signup_started", props={"plan": "enterprise"}),
        event(type="signup_started"),  # no props: checked as {}
        event(type="other_custom", props={"plan": "enterprise"}),  # unregistered: generic rules
        event(type="signup_started", schema="event/1-1-0", seq=1, props={"plan": "free", "extra": 1}),
    ]
    out = run(events, schemas)
    assert len(out.records) == 3
    assert [(e.index, e.path, e.reason) for e in out.errors] == [
        (1, "/props/plan", RejectReason.SCHEMA_VIOLATION), (2, "/props", RejectReason.SCHEMA_VIOLATION)]
    assert "custom event 'signup_started'" in out.errors[0].message and "enterprise" in out.errors[0].message
    assert "plan" in out.errors[1].message
    assert [e["event"].get("props") for e in out.rejected_entries] == [{"plan": "enterprise"}, None]
    assert [e["reason"] for e in out.rejected_entries] == ["schema_violation"] * 2


def test_generic_rules_still_apply_to_registered_types(tmp_path: Path) -> None:
    schemas = EventSchemas.from_settings(custom_dir(tmp_path, {"signup_started.json": {}}))
    out = run([event(type="signup_started", props={"plan": "x" * 600})], schemas)
    [error] = out.errors
    assert error.path == "/props/plan" and "custom event" not in error.message


@pytest.mark.parametrize(("files", "match"), [
    ({"Signup.json": {}}, "file name must be the event type"),
    ({"signup.json": "{not json"}, "signup.json"),
    ({"signup.json": {"type": "no-such-type"}}, "signup.json"),
    ({"signup.json": [1]}, "signup.json"),
])
def test_a_bad_custom_schema_file_is_named_at_load(tmp_path: Path, files: dict[str, Any], match: str) -> None:
    with pytest.raises(SchemaLoadError, match=match):
        load_custom_schemas(custom_dir(tmp_path, files))


def test_a_missing_custom_schema_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="not a directory"):
        load_custom_schemas(tmp_path / "nope")
    assert load_custom_schemas(None) == {}
