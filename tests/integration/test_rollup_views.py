"""The dashboard views answered from one roll-up each (sql/rollup_views.sql, reports/views.py) give the
same rows as 0102's views (sql/0102_range_views.sql: uniqExact states merged, leads joined from
`lead_events`), which serve here as the independent computation of the leads: every column, every view,
for several ranges, with leads on paths and channels no session of the range has, a lead stored twice
and a lead that arrives after a fold (its day is marked and rebuilt: sql/0124_rollup_leads.sql).

`sync` puts each view in the form its roll-up allows: a roll-up at an earlier definition version (an
upgraded installation, before the fold switched the new version in) gets 0102's form back, so its empty
bitmaps and lead states are never read; `reconcile --repair`, which builds and switches the version,
puts the views on the roll-up at once. Real chDB (a temp directory), the real ingest path and fold.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from reports import versions, views
from reports.fold import fold
from reports.reconcile import reconcile
from tests.integration.test_rollups import DAY0, DAYS, PATHS, SITES, Store, generate

#: (view, query with {site}/{from}/{to} where it takes them)
QUERIES = {
    "v_daily_traffic": "SELECT * FROM v_daily_traffic WHERE site_id = {site:String} AND day BETWEEN {from:Date} "
                       "AND {to:Date} ORDER BY day",
    "v_traffic_range": "SELECT * FROM v_traffic_range(site = {site:String}, from = {from:Date}, to = {to:Date})",
    "v_landing_pages": "SELECT * FROM v_landing_pages WHERE site_id = {site:String} ORDER BY landing_path",
    "v_landing_pages_range": "SELECT * FROM v_landing_pages_range(site = {site:String}, from = {from:Date}, "
                             "to = {to:Date}) ORDER BY landing_path",
    "v_channels": "SELECT * FROM v_channels WHERE site_id = {site:String} "
                  "ORDER BY channel, utm_source, utm_medium, utm_campaign",
    "v_channels_range": "SELECT * FROM v_channels_range(site = {site:String}, from = {from:Date}, to = {to:Date}) "
                        "ORDER BY channel, utm_source, utm_medium, utm_campaign",
}
RANGES = ((DAY0, DAY0 + dt.timedelta(days=DAYS)), (DAY0 + dt.timedelta(days=3), DAY0 + dt.timedelta(days=5)),
          (DAY0 + dt.timedelta(days=7), DAY0 + dt.timedelta(days=7)))


def lead_rows(rng: random.Random, n: int, first: int = 0) -> list[dict[str, Any]]:
    """`n` leads over the days of the test's events, some on a landing path and a channel with no
    sessions ('/only-leads', 'affiliate' with a campaign of its own)."""
    out = []
    for i in range(first, first + n):
        site = SITES[i % 3]
        day = DAY0 + dt.timedelta(days=rng.randrange(DAYS))
        occurred = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=rng.randrange(86_400))
        odd = i % 7 == 0
        channel, source, medium, campaign = (("affiliate", "partner", "affiliate", f"only-{i}") if odd else
                                             rng.choice([("direct", "", "", ""), ("paid_search", "google", "cpc",
                                                         "spring"), ("email", "newsletter", "email", "")]))
        out.append({"lead_id": f"lead-{i}", "site_id": site, "anonymous_id": f"v{i}", "occurred_at": occurred,
                    "landing_path": "/only-leads" if odd else rng.choice(PATHS),
                    "last_touch": (source, medium, campaign, "", "", "", channel, "/", None)})
    return out


def insert_leads(client: Client, leads: list[dict[str, Any]], token: str) -> None:
    client.insert("lead_events",
                  [[uuid.uuid5(uuid.NAMESPACE_URL, f"{token}-{i}"), x["lead_id"], x["site_id"], x["anonymous_id"],
                    x["occurred_at"], x["landing_path"], x["last_touch"], x["occurred_at"]]
                   for i, x in enumerate(leads)],
                  column_names=["event_id", "lead_id", "site_id", "anonymous_id", "occurred_at", "landing_path",
                                "last_touch", "emitted_at"],
                  settings={**INSERT_SETTINGS, "insert_deduplication_token": token})


def answers(client: Client) -> dict[tuple[str, str, dt.date, dt.date], list[tuple[Any, ...]]]:
    out = {}
    for view, sql in QUERIES.items():
        for site in SITES:
            for first, last in RANGES:
                result = client.query(sql, parameters={"site": site, "from": first, "to": last})
                out[(view, site, first, last)] = [tuple(r) for r in result.result_rows]
    return out


def before_form(client: Client) -> dict[tuple[str, str, dt.date, dt.date], list[tuple[Any, ...]]]:
    """The answers of 0102's views over the same roll-ups (each view re-created in that form, then put
    back by `sync`)."""
    for _, _, before in views.forms().values():
        client.command(before)
    assert not any(views.reads_rollups_only(client).values())
    try:
        return answers(client)
    finally:
        assert views.sync(client) == sorted(views.forms())


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client)
        yield client
    finally:
        client.close()


def test_views_on_the_rollups_equal_the_views_with_joins_through_late_and_duplicate_leads(client: Client) -> None:
    rng = random.Random(24)
    Store(client).insert(generate(rng, 200))
    leads = lead_rows(rng, 60)
    insert_leads(client, leads, "leads-1")
    insert_leads(client, leads[:5], "leads-1-again")  # the same leads stored twice (other event ids)
    assert fold(client) is not None
    assert all(views.reads_rollups_only(client).values())  # the fold put every view on the roll-ups
    after = answers(client)
    assert after == before_form(client)
    total = client.query("SELECT sum(leads) FROM v_landing_pages").result_rows[0][0]
    assert total == len({x["lead_id"] for x in leads}) == 60
    only = client.query("SELECT sessions, visitors, leads, conversion_rate FROM v_landing_pages "
                        "WHERE landing_path = '/only-leads'").result_rows
    assert only and all(r[0] == 0 and r[1] == 0 and r[2] > 0 and r[3] is None for r in only)

    # a lead that arrives after the fold, on a day no new event marks: its day is marked and rebuilt
    late = lead_rows(random.Random(7), 1, first=700)  # 700 % 7 == 0: a path and a channel of its own
    insert_leads(client, late, "leads-late")
    day = late[0]["occurred_at"].date()
    assert (late[0]["site_id"], day) in {(str(s), d) for s, d in client.query(
        "SELECT site_id, day FROM fold_dirty_days").result_rows}
    run = fold(client)
    assert run is not None and day in run.days
    assert client.query("SELECT leads FROM v_channels_range(site = {s:String}, from = {d:Date}, to = {d:Date}) "
                        "WHERE utm_campaign = 'only-700'", parameters={"s": late[0]["site_id"], "d": day}
                        ).result_rows == [(1,)]
    assert answers(client) == before_form(client) != after
    assert reconcile(client).clean


def test_a_rollup_at_an_earlier_version_keeps_the_views_that_read_it_on_the_joins(client: Client) -> None:
    rng = random.Random(3)
    Store(client).insert(generate(rng, 120))
    insert_leads(client, lead_rows(rng, 30), "leads")
    assert fold(client) is not None
    want = answers(client)
    # channel_daily as an upgraded installation holds it until the fold switches version 3 in
    versions.stamp(client, "channel_daily", 2)
    assert views.ready(client) == {"traffic_daily", "landing_daily"}
    assert views.sync(client) == ["v_channels", "v_channels_range"]
    assert views.reads_rollups_only(client) == {v: not v.startswith("v_channels") for v in QUERIES}
    client.command("ALTER TABLE channel_daily UPDATE leads = initializeAggregation('uniqExactState', '') "
                   "WHERE 1 SETTINGS mutations_sync = 2")  # the lead states an earlier version left empty
    assert answers(client) == want  # read from lead_events, not from the emptied states
    assert views.sync(client) == []  # nothing to change while the roll-up stays at version 2
    versions.stamp(client, "channel_daily", 3)
    assert views.sync(client) == ["v_channels", "v_channels_range"]
    assert answers(client) != want  # now read from the roll-up's emptied lead states: the form changed
    versions.stamp(client, "channel_daily", 2)
    assert views.sync(client) == ["v_channels", "v_channels_range"]
    # `reconcile --repair` builds version 3 from history and switches it in: the views follow at once
    report = reconcile(client, repair=True)
    assert report.switched == ["channel_daily"] and report.clean
    assert all(views.reads_rollups_only(client).values())
    assert answers(client) == want
