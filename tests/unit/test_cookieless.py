"""Daily salts, keyed hashes and cookieless ids (collector.salt, collector.cookieless).

Expected values are computed independently (hashlib over the salt file's bytes), not by the code
under test; salts live in a temporary directory per test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

from collector.cookieless import CookielessIds
from collector.salt import DailyHasher, DailySalt, key_file

DAY1 = dt.datetime(2024, 3, 1, 0, 0, 1, tzinfo=dt.UTC)
DAY1_LATE = dt.datetime(2024, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
DAY2 = dt.datetime(2024, 3, 2, 0, 0, 0, tzinfo=dt.UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0.0.0 Safari/537.36"
MIN = 60_000
T0 = 1_700_000_000_000


def derived_salt(day: str) -> bytes:  # a deterministic stand-in for DailySalt in hash tests
    return hashlib.sha256(b"test-salt:" + day.encode()).digest()


# -- salts -------------------------------------------------------------------------------------
def test_a_days_salt_is_random_private_and_shared_through_its_file(tmp_path: Path) -> None:
    one, two = DailySalt(tmp_path / "salts"), DailySalt(tmp_path / "salts")
    salt = one("2024-03-01")
    path = tmp_path / "salts" / "2024-03-01.salt"
    assert salt == path.read_bytes() and len(salt) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "salts").stat().st_mode) == 0o700
    assert two("2024-03-01") == salt  # a second process (or a restart) uses the same salt
    assert DailySalt(tmp_path / "other")("2024-03-01") != salt


def test_a_new_day_deletes_the_salts_of_earlier_days(tmp_path: Path) -> None:
    salts = DailySalt(tmp_path)
    first = salts("2024-03-01")
    (tmp_path / "2024-03-03.salt").write_bytes(b"f" * 32)  # a clock ahead elsewhere: kept
    second = salts("2024-03-02")
    assert second != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2024-03-02.salt", "2024-03-03.salt"]


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "k.salt"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(key_file(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0] == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["k.salt"]  # no temporary file left


def test_a_short_key_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "k.salt"
    path.write_bytes(b"")
    key = key_file(path)
    assert len(key) == 32 and path.read_bytes() == key


# -- hashes ------------------------------------------------------------------------------------
def test_hash_is_stable_within_a_utc_day_and_rotates_daily() -> None:
    hasher = DailyHasher(derived_salt)
    first = hasher("203.0.113.7", DAY1)
    assert hasher("203.0.113.7", DAY1_LATE) == first
    assert hasher("203.0.113.7", DAY2) != first
    assert hasher("203.0.113.8", DAY1) != first
    assert first == hashlib.blake2b(b"203.0.113.7", key=derived_salt("2024-03-01"), digest_size=8).hexdigest()


def test_hash_without_a_time_is_todays_and_memoised() -> None:
    hasher = DailyHasher(derived_salt, cache_size=2)
    ips = ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.1")
    for _ in range(3):  # retry if the UTC day changed between the two calls
        today = dt.datetime.now(dt.UTC)
        values = [hasher(ip) for ip in ips]
        if dt.datetime.now(dt.UTC).date() == today.date():
            break
    assert values == [DailyHasher(derived_salt)(ip, today) for ip in ips]


def test_hash_of_an_ip_depends_on_the_salt_and_never_shows_the_ip(tmp_path: Path) -> None:
    ip = "2001:db8::1"
    a = DailyHasher(DailySalt(tmp_path / "a"))(ip, DAY1)
    b = DailyHasher(DailySalt(tmp_path / "b"))(ip, DAY1)
    assert a != b and len(a) == 16 and int(a, 16) >= 0
    assert "2001" not in a
    assert a == hashlib.blake2b(ip.encode(), key=(tmp_path / "a" / "2024-03-01.salt").read_bytes(),
                                digest_size=8).hexdigest()


# -- cookieless ids ----------------------------------------------------------------------------
def pending(site: str = "example.com", ts: int = T0, **fields: Any) -> dict[str, Any]:
    return {"type": "page_view", "site_id": site, "ts": ts, "url": f"https://{site}/", **fields}


def ids(event: dict[str, Any]) -> tuple[str, str]:
    return event["anonymous_id"], event["session_id"]


def test_visitor_id_is_a_keyed_hash_of_site_ip_and_user_agent_per_day(tmp_path: Path) -> None:
    salt = DailySalt(tmp_path)
    cookieless = CookielessIds(DailyHasher(salt, digest_size=12))
    visitor = cookieless.visitor_id("example.com", "203.0.113.7", UA)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    key = (tmp_path / f"{today}.salt").read_bytes()
    want = hashlib.blake2b(f"example.com\x00203.0.113.7\x00{UA}".encode(), key=key, digest_size=12).hexdigest()
    assert visitor == "cookieless-" + want
    assert cookieless.visitor_id("example.com", "203.0.113.7", UA) == visitor  # stable within the day
    assert cookieless.visitor_id("shop.example", "203.0.113.7", UA) != visitor  # another site
    assert cookieless.visitor_id("example.com", "203.0.113.8", UA) != visitor  # another network
    assert cookieless.visitor_id("example.com", "203.0.113.7", UA + " Edg/126") != visitor  # another browser
    tomorrow = DailyHasher(salt, digest_size=12)(f"example.com\x00203.0.113.7\x00{UA}", DAY2)
    assert "cookieless-" + tomorrow != visitor


def test_sessions_follow_the_30_minute_and_campaign_rules() -> None:
    cookieless = CookielessIds(DailyHasher(derived_salt, digest_size=12))
    events = [
        pending(ts=T0),
        pending(ts=T0 + 29 * MIN),                      # 29 min later: same session
        pending(ts=T0 + 29 * MIN + 5),                  # the other visitor on another site
        pending(ts=T0 + 59 * MIN + 1),                  # 30 min + 1 ms after the last: new session
        pending(ts=T0 + 60 * MIN, utm={"source": "newsletter"}),  # a campaign: new session
        pending(ts=T0 + 61 * MIN, utm={"source": "newsletter"}),  # the same campaign: same session
        pending(ts=T0 + 62 * MIN),                      # no campaign on this page: same session
    ]
    events[2]["site_id"] = "shop.example"
    for e in events:
        cookieless.assign(e, "203.0.113.7", UA, received_at_ms=e["ts"])
    visitors = [e["anonymous_id"] for e in events]
    sessions = [e["session_id"] for e in events]
    assert visitors[:2] + visitors[3:] == [visitors[0]] * 6 and visitors[2] != visitors[0]
    assert sessions[0] == sessions[1] and sessions[1] != sessions[3] != sessions[4]
    assert sessions[4] == sessions[5] == sessions[6]
    assert len({sessions[0], sessions[2], sessions[3], sessions[4]}) == 4
    assert all(str(uuid.UUID(s)) == s for s in sessions)


def test_events_of_a_session_may_arrive_out_of_order() -> None:
    cookieless = CookielessIds(DailyHasher(derived_salt, digest_size=12))
    late, early = pending(ts=T0 + 10 * MIN), pending(ts=T0)
    cookieless.assign(late, "198.51.100.4", UA, received_at_ms=T0 + 10 * MIN)
    cookieless.assign(early, "198.51.100.4", UA, received_at_ms=T0 + 10 * MIN)  # a retried batch
    assert ids(late) == ids(early)


def test_idle_sessions_are_forgotten_and_the_table_is_bounded_with_evictions_counted() -> None:
    evicted: list[int] = []
    cookieless = CookielessIds(DailyHasher(derived_salt, digest_size=12), max_visitors=2,
                               on_evict=lambda: evicted.append(1))
    a, b = pending(ts=T0), pending(ts=T0)
    cookieless.assign(a, "10.0.0.1", UA, received_at_ms=T0)
    cookieless.assign(b, "10.0.0.2", UA, received_at_ms=T0)
    assert len(cookieless) == 2 and evicted == []
    cookieless.assign(pending(ts=T0 + 1), "10.0.0.3", UA, received_at_ms=T0 + 1)  # over the bound
    assert len(cookieless) == 2 and evicted == [1]
    again = pending(ts=T0 + 2)
    cookieless.assign(again, "10.0.0.1", UA, received_at_ms=T0 + 2)  # forgotten: a new session
    assert again["anonymous_id"] == a["anonymous_id"] and again["session_id"] != a["session_id"]
    assert evicted == [1, 1]  # b made room for it
    cookieless.assign(pending(ts=T0 + 31 * MIN), "10.0.0.9", UA, received_at_ms=T0 + 31 * MIN)
    assert len(cookieless) == 1 and evicted == [1, 1]  # the idle ones expired without counting
