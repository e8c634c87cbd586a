"""The collector's group commit (collector.app.TurnGroup): the requests accepted in one turn of the
event loop are spooled as one block record, each row with its own request's stamps and a position
in arrival order, and flushed into real chDB exactly as if each request had had its own record.

The requests run concurrently on one event loop through `Collector.answer` (the `/collect` path
behind uvicorn, minus the socket), so which requests share a turn is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from clickstream.core.clickhouse import connect, migrate
from clickstream.core.errors import HttpAnswer
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolReader, SpoolWriter, scan_blocks
from collector.app import Collector, TurnGroup
from flusher.loop import Flusher
from tests.conftest import make_event, now_ms

#: Distinct browsers, so every request's stamp differs from its neighbours'.
AGENTS = [
    f"Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0" for v in range(100, 112)
] + [
    f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    f"Version/{v}.0 Safari/605.1.15" for v in range(14, 18)
]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(Settings(data_dir=tmp_path / "data"))
    c.start()
    yield c
    c.stop()


def requests_of(n: int) -> list[tuple[list[dict[str, Any]], str]]:
    """`n` requests of 1 to 3 page views each, every one from its own browser."""
    base = now_ms() - 60_000
    out = []
    for r in range(n):
        events = [make_event(session_id=f"s{r}", anonymous_id=f"a{r}", ts=base + r, url=f"https://example.com/p{r}/{i}")
                  for i in range(1 + r % 3)]
        out.append((events, AGENTS[r % len(AGENTS)]))
    return out


async def post(collector: Collector, events: list[dict[str, Any]], agent: str) -> HttpAnswer | None:
    body = orjson.dumps(events)
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        assert not sent, "the body is read once"
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return await collector.answer(receive, "text/plain;charset=UTF-8", str(len(body)), agent, "203.0.113.9")


async def post_all(collector: Collector, requests: list[tuple[list[dict[str, Any]], str]],
                   together: bool) -> list[HttpAnswer | None]:
    if together:  # all in the same turns of the loop
        return list(await asyncio.gather(*(post(collector, events, agent) for events, agent in requests)))
    return [await post(collector, events, agent) for events, agent in requests]


def blocks_on_disk(data_dir: Path) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """(segment id, frame offset, rows) of every block record in the spool, in order."""
    out = []
    reader = SpoolReader(data_dir / "spool")
    for segment in reader.sealed_segments() + reader.open_segments():
        data = segment.path.read_bytes()
        blocks, _ = scan_blocks(data)
        for offset, end, n, _, rows_start in blocks:
            assert n, "every record the collector writes is a block"
            rows = [orjson.loads(line) for line in data[rows_start:end].splitlines()]
            out.append((segment.segment_id, offset, rows))
    return out


@pytest.mark.parametrize("together", [True, False], ids=["one-turn", "one-by-one"])
def test_requests_of_one_turn_share_one_record_in_arrival_order(collector: Collector, together: bool) -> None:
    requests = requests_of(16)
    answers = asyncio.run(post_all(collector, requests, together))
    assert [a.status if a else None for a in answers] == [202] * len(requests)
    blocks = blocks_on_disk(collector.settings.data_dir)
    # one record for the whole turn, or one per request when each waited for the one before
    assert [len(rows) for _, _, rows in blocks] == (
        [sum(len(e) for e, _ in requests)] if together else [len(e) for e, _ in requests])
    rows = [(segment, offset, row) for segment, offset, block in blocks for row in block]
    sent = [(event, agent) for events, agent in requests for event in events]
    assert [row["event_id"] for _, _, row in rows] == [event["event_id"] for event, _ in sent]
    for (segment, _, row), (event, agent) in zip(rows, sent, strict=True):
        assert row["user_agent"] == agent  # each row carries its own request's stamp
        assert {k: row[k] for k in event} == event
        assert row["spool_segment"] == segment
    positions = [(row["spool_segment"], row["spool_offset"]) for _, _, row in rows]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    for _, offset, block in blocks:  # row i of a block at byte B is at offset B + i
        assert [row["spool_offset"] for row in block] == list(range(offset, offset + len(block)))


def test_a_group_flushes_into_clickhouse_like_separate_records(collector: Collector, tmp_path: Path) -> None:
    requests = requests_of(12)
    retried = requests[:3]  # the same events again in the same turn: a client retry, counted once
    answers = asyncio.run(post_all(collector, requests + retried, together=True))
    assert all(a is not None and a.status == 202 for a in answers)
    collector.stop()
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    migrate(client)
    flusher = Flusher(Settings(data_dir=collector.settings.data_dir), client)
    flusher.drain()
    stored = {row[0]: row[1:] for row in client.query(
        "SELECT toString(event_id), user_agent, browser, spool_offset FROM events").result_rows}
    sent = {event["event_id"]: agent for events, agent in requests for event in events}
    assert {k: v[0] for k, v in stored.items()} == sent
    assert all(v[1] in ("Firefox", "Safari") for v in stored.values())
    assert client.query("SELECT count() FROM events").result_rows[0][0] == len(sent)
    assert not list(SpoolReader(collector.settings.spool_dir).sealed_segments())
    client.close()


def test_a_failed_group_write_fails_every_request_and_spools_none_of_them(collector: Collector) -> None:
    requests = requests_of(6)
    ok = asyncio.run(post_all(collector, requests[:2], together=True))
    assert [a.status if a else None for a in ok] == [202, 202]
    collector.spool.close()  # as at shutdown: the group's write raises SpoolError
    answers = asyncio.run(post_all(collector, requests[2:], together=True))
    for answer in answers:
        assert answer is not None and answer.status == 503
        assert orjson.loads(answer.body)["error"] == "spool_unavailable"
    spooled = [row["event_id"] for _, _, rows in blocks_on_disk(collector.settings.data_dir) for row in rows]
    assert spooled == [e["event_id"] for events, _ in requests[:2] for e in events]


def test_a_group_is_written_at_once_when_it_reaches_its_size(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "spool", fsync_interval_ms=0).open()
    group = TurnGroup(writer, max_bytes=1000)
    row = orjson.dumps(make_event())
    ids = [orjson.loads(row)["event_id"].encode()]

    async def turn() -> list[Any]:
        futures = [group.append(ids, [row], b',"received_at":1') for _ in range(7)]
        done_before_the_turn_ended = [f.done() for f in futures]
        await asyncio.gather(*futures)
        return done_before_the_turn_ended

    done = asyncio.run(turn())
    writer.close()
    per_record = -(-1000 // (len(row) + len(b',"received_at":1')))  # rows until the group holds max_bytes
    full = 7 // per_record * per_record  # the rows of the groups that reached the size
    assert done == [i < full for i in range(7)]  # written at once; the rest at the end of the turn
    blocks = blocks_on_disk(tmp_path)
    sizes = [per_record] * (7 // per_record) + ([7 % per_record] if 7 % per_record else [])
    assert [len(rows) for _, _, rows in blocks] == sizes
