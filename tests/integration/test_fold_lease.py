"""The fold's lock (reports/fold.py): `FoldLease` across processes on one server, and the embedded
engine, where a claim left by a process killed mid-fold must not hold the next folds off.
Real chDB (a temp directory per test)."""

from __future__ import annotations

import random
import time

import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import is_embedded
from reports.fold import FoldLease, fold
from tests.integration.test_rollups import Store, generate, sessions_of


@pytest.fixture
def client(chdb_client: Client) -> Client:
    return chdb_client


def test_the_lease_admits_one_holder_until_released_or_expired(client: Client) -> None:
    first, second = FoldLease(client), FoldLease(client)
    holder = first.acquire()
    assert holder is not None
    assert second.acquire() is None  # the earliest live claim wins
    first.release(holder)
    other = second.acquire()
    assert other is not None and other != holder
    second.release(other)

    dead = FoldLease(client, lease_s=0.5).acquire()  # a holder that never releases (killed)
    assert dead is not None
    assert FoldLease(client).acquire() is None
    time.sleep(0.6)
    after_expiry = FoldLease(client).acquire()
    assert after_expiry is not None and after_expiry != dead


def test_a_claim_left_by_a_killed_fold_does_not_stop_the_embedded_engine_folding(client: Client) -> None:
    """chDB locks its directory: no other process can hold the fold, so a live claim in fold_lease is a
    dead one (a `serve` killed mid-fold) and the next fold runs at once, not LEASE_S later."""
    assert is_embedded(client)
    assert FoldLease(client).acquire() is not None  # never released: the process was killed
    store = Store(client)
    store.insert(generate(random.Random(5), 40))
    run = fold(client)
    assert run is not None and run.days
    expected = {s["session_id"] for s in sessions_of(store.events)}
    assert expected
    folded = {r[0] for r in client.query("SELECT session_id FROM session_facts").result_rows}
    assert folded == expected
    live = client.query("SELECT count() FROM (SELECT holder FROM fold_lease GROUP BY holder "
                        "HAVING max(released) = 0 AND max(expires_at) > now64(6, 'UTC'))").result_rows[0][0]
    assert live == 1  # the dead claim is still live: the fold did not wait for it to expire
