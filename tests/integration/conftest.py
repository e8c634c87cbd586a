"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import connect, migrate


@pytest.fixture
def chdb_client(tmp_path: Path) -> Iterator[Client]:
    """An embedded ClickHouse (chDB) in the test's temp directory, migrated; closed after the test."""
    c = connect(f"chdb://{tmp_path / 'clickhouse'}")
    migrate(c)
    yield c
    c.close()
