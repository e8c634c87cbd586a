"""clickstream.core.clickhouse.ClickHouseSink on real chDB: byte ranges and one buffer insert the same rows,
under the same dedup token, and a refused row is a data error either way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import ClickHouseSink, Rows, connect, is_data_error

TABLE = "sink_rows"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    c = connect(f"chdb://{tmp_path / 'clickhouse'}")
    c.command(f"CREATE TABLE {TABLE} (a UInt64) ENGINE = MergeTree ORDER BY a "
              "SETTINGS non_replicated_deduplication_window = 100")
    yield c
    c.close()


def _rows(client: Client) -> list[int]:
    return [int(r[0]) for r in client.query(f"SELECT a FROM {TABLE} ORDER BY a").result_rows]


@pytest.mark.parametrize("shape", ["ranges", "buffer"])
def test_a_retried_token_is_dropped_even_with_other_rows(client: Client, shape: str) -> None:
    """The token reaches ClickHouse: a second insert under it is dropped although its rows differ (so
    not by the block's hash), and it does not outlive its statement."""
    lines = b'{"a":1}\n{"a":2}\n{"a":3}\n'
    view = memoryview(lines)
    first: Rows = [view[:8], b'{"a":2}\n', view[16:]] if shape == "ranges" else lines
    again: Rows = [b'{"a":7}\n'] if shape == "ranges" else b'{"a":7}\n'
    sink = ClickHouseSink(client)
    sink.insert(TABLE, first, "segment-1:0-3")
    sink.insert(TABLE, again, "segment-1:0-3")
    assert _rows(client) == [1, 2, 3]
    sink.insert(TABLE, again, "segment-1:3-4")
    assert _rows(client) == [1, 2, 3, 7]
    assert client.query("SELECT getSetting('insert_deduplication_token')").result_rows[0][0] == ""


@pytest.mark.parametrize("shape", ["ranges", "buffer"])
def test_a_refused_row_is_a_data_error(client: Client, shape: str) -> None:
    bad = b'{"a":"not a number"}\n'
    with pytest.raises(Exception) as caught:
        ClickHouseSink(client).insert(TABLE, [bad] if shape == "ranges" else bad, "segment-2:0-1")
    assert is_data_error(caught.value), caught.value
    assert _rows(client) == []
