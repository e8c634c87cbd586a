"""Versioned business events on real chDB (sql/0070_lead_schema.sql, docs/schema-versioning.md):
a lead stored before `lead_events` had a `schema` column reads it from its own payload without its
part being rewritten; a version 2 of lead_created with an added field, introduced by a test
migration, reads through `v_leads` in one shape with the version-1 lead, whose frozen attribution
stays byte-identical."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from stitcher.attribution import Attribution, Touch
from stitcher.event import SCHEMA_ID, build_event, lead_events_row, schema_name
from stitcher.outbox import Entry
from stitcher.relay import ClickHouseDeliverer
from stitcher.request import parse_request
from tests.conftest import ROOT, now_ms

V2_ID = "https://clickstream.dev/schemas/lead_created/1-1-0.json"
#: What a release adding `lead_value` to lead_created (1-1-0) would ship: the column (older rows
#: read it from their payload, where it is absent) and v_leads upcasting version-1 leads to 0.
V2_MIGRATION = """-- test only: lead_created 1-1-0 adds lead_value
ALTER TABLE lead_events ADD COLUMN IF NOT EXISTS lead_value Nullable(Float64)
    DEFAULT JSONExtract(payload, 'lead_value', 'Nullable(Float64)')
;
{view}
;
"""
ATTRIBUTION_COLUMNS = (
    "event_id, lead_id, site_id, anonymous_id, occurred_at, emitted_at, session_id, landing_path, "
    "first_utm_source, first_utm_medium, first_utm_campaign, first_utm_term, first_utm_content, first_referrer_host, "
    "first_channel, first_landing_path, first_ts, last_utm_source, last_utm_medium, last_utm_campaign, last_utm_term, "
    "last_utm_content, last_referrer_host, last_channel, last_landing_path, last_ts, variants, properties")


def sql_dir(tmp_path: Path, name: str, upto: int = 9999, extra: dict[str, str] | None = None) -> Path:
    """A copy of the package's migrations numbered below `upto`, plus `extra` files."""
    folder = tmp_path / name
    folder.mkdir()
    for path in (ROOT / "sql").glob("*.sql"):
        if path.name[:4].isdigit() and int(path.name[:4]) < upto:  # migrations only
            shutil.copy(path, folder / path.name)
    for file_name, text in (extra or {}).items():
        (folder / file_name).write_text(text)
    return folder


def v2_view() -> str:
    """0070's v_leads with the 1-1-0 field: version-1 leads upcast to lead_value 0."""
    text = (ROOT / "sql" / "0070_lead_schema.sql").read_text()
    view = text[text.index("CREATE OR REPLACE VIEW v_leads"):].rstrip().removesuffix(";").rstrip()
    head, tail = view.rsplit("\nFROM lead_events", 1)
    return (head + ",\n    if(schema_version = '1-0-0', 0, assumeNotNull(lead_value)) AS lead_value"
            "\nFROM lead_events" + tail)


def lead(lead_id: str) -> Entry:
    request = parse_request(orjson.dumps({"lead_id": lead_id, "anonymous_id": f"visitor-{lead_id}",
                                          "properties": {"form": "demo", "seats": 12}}),
                            now_ms=now_ms(), max_skew_ms=0)
    first = Touch("google", "cpc", "spring", "analytics", "ad-1", "www.google.com", "paid_search", "/lp/a",
                  now_ms() - 86_400_000)
    last = Touch("newsletter", "email", "june", "", "", "", "email", "/pricing", now_ms() - 60_000)
    attribution = Attribution("example.com", "s-" + lead_id, "/pricing", first, last, {"hero": "B", "cta": "green"})
    event = build_event(request, attribution, occurred_at_ms=now_ms(), emitted_at_ms=now_ms())
    return Entry(lead_id, orjson.loads(event)["event_id"], request.fingerprint(), request.canonical(), event, now_ms())


def parts(client: Client) -> list[tuple[str, int, int]]:
    return [(str(r[0]), int(r[1]), int(r[2])) for r in client.query(
        "SELECT name, rows, bytes_on_disk FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'lead_events' AND active ORDER BY name").result_rows]


def read(client: Client, query: str) -> bytes:
    return bytes(client.raw_query(query + " FORMAT JSONEachRow"))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    c = connect(f"chdb://{tmp_path / 'clickhouse'}")
    yield c
    c.close()


def test_v1_and_v2_leads_read_as_one_shape_with_frozen_attribution(client: Client, tmp_path: Path) -> None:
    # A version-1 lead stored by the relay of the release before 0070 (no `schema` column yet).
    migrate(client, sql_dir=sql_dir(tmp_path, "before", upto=70))
    old = lead("L-old")
    row = orjson.loads(lead_events_row(old.event))
    del row["schema"]
    client.raw_insert("lead_events", None, orjson.dumps(row), fmt="JSONEachRow",
                      settings={**INSERT_SETTINGS, "insert_deduplication_token": old.event_id})
    stored_parts = parts(client)
    assert len(stored_parts) == 1 and stored_parts[0][1] == 1

    assert migrate(client, sql_dir=sql_dir(tmp_path, "now"))[0] == "0070_lead_schema"  # then the later ones
    assert parts(client) == stored_parts  # never rewritten: the column is read from the payload
    new = lead("L-new")
    ClickHouseDeliverer(client).deliver(new)  # the relay of this release writes the column
    assert client.query("SELECT lead_id, schema FROM lead_events ORDER BY lead_id").result_rows == [
        ("L-new", SCHEMA_ID), ("L-old", SCHEMA_ID)]
    one_version = read(client, f"SELECT {ATTRIBUTION_COLUMNS}, schema_version FROM v_leads ORDER BY lead_id")
    payloads = client.query("SELECT lead_id, payload FROM lead_events ORDER BY lead_id").result_rows
    assert [p[1].encode() for p in payloads] == [new.event, old.event]

    # Version 2 (1-1-0) adds lead_value: a test migration adds the column and upcasts in v_leads.
    applied = migrate(client, sql_dir=sql_dir(tmp_path, "v2", extra={
        "9000_test_lead_v2.sql": V2_MIGRATION.format(view=v2_view())}))
    assert applied == ["9000_test_lead_v2"]
    v2 = orjson.loads(lead("L-v2").event)
    v2["schema"] = V2_ID
    v2["lead_value"] = 1234.5
    payload = orjson.dumps(v2)
    v2_row = {**orjson.loads(lead_events_row(payload)), "lead_value": v2["lead_value"]}
    client.raw_insert("lead_events", None, orjson.dumps(v2_row), fmt="JSONEachRow",
                      settings={**INSERT_SETTINGS, "insert_deduplication_token": v2["event_id"]})

    columns = [r[0] for r in client.query("DESCRIBE v_leads").result_rows]
    assert columns[-3:] == ["schema", "schema_version", "lead_value"]
    rows = client.query("SELECT lead_id, schema_version, lead_value FROM v_leads ORDER BY lead_id").result_rows
    assert rows == [("L-new", "1-0-0", 0.0), ("L-old", "1-0-0", 0.0), ("L-v2", "1-1-0", 1234.5)]
    # the version-1 leads: every frozen value and their payload byte for byte as before version 2
    after = read(client, f"SELECT {ATTRIBUTION_COLUMNS}, schema_version FROM v_leads "
                         "WHERE lead_id != 'L-v2' ORDER BY lead_id")
    assert after == one_version
    assert client.query("SELECT lead_id, payload FROM lead_events WHERE lead_id != 'L-v2' ORDER BY lead_id"
                        ).result_rows == payloads
    assert [p for p in parts(client) if p in stored_parts] == stored_parts
    # the version-2 lead reads its frozen values the same way
    [v2_read] = client.query("SELECT first_channel, last_utm_campaign, variants, properties FROM v_leads "
                             "WHERE lead_id = 'L-v2'").result_rows
    assert v2_read == ("paid_search", "june", {"hero": "B", "cta": "green"}, '{"form":"demo","seats":12}')
    assert client.query("SELECT sum(leads) FROM conversions").result_rows == [(3,)]


def test_schema_name_is_the_webhook_header_value() -> None:
    assert schema_name(SCHEMA_ID) == "lead_created/1-0-0"
    assert schema_name(V2_ID) == "lead_created/1-1-0"
    with pytest.raises(ValueError, match="not a clickstream schema URI"):
        schema_name("lead_created")
