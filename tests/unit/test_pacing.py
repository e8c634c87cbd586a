"""The adaptive flush interval (flusher.pacing): expected values from the rule it documents."""

from __future__ import annotations

import pytest

from clickstream.core.settings import Settings, SettingsError
from flusher.pacing import FULL_RATE, FlushPacer


def steady(pacer: FlushPacer, events_per_s: float, flushes: int = 40) -> None:
    """Flushes every 0.5 s carrying what arrived at `events_per_s` meanwhile."""
    for i in range(flushes):
        pacer.observe(round(events_per_s * 0.5), now=100.0 + 0.5 * i)


def test_starts_at_the_minimum_and_idle_stays_there() -> None:
    pacer = FlushPacer(200, 1000)
    assert pacer.interval_ms == 200
    steady(pacer, 0)
    assert pacer.interval_ms == 200


def test_light_traffic_flushes_at_the_minimum_interval() -> None:
    pacer = FlushPacer(200, 1000)
    steady(pacer, 2000)  # 2,000 events/s: 1,000 × 0.2 = 200 ms
    assert pacer.interval_ms == pytest.approx(200, rel=0.01)
    steady(pacer, 200)
    assert pacer.interval_ms == 200


def test_heavy_traffic_flushes_about_once_per_second() -> None:
    pacer = FlushPacer(200, 1000)
    steady(pacer, 20_000)
    assert pacer.interval_ms == 1000
    steady(pacer, FULL_RATE)
    assert pacer.interval_ms == pytest.approx(1000, rel=0.01)


def test_in_between_the_interval_grows_with_the_rate() -> None:
    pacer = FlushPacer(200, 1000)
    steady(pacer, 5000)
    assert pacer.interval_ms == pytest.approx(1000 * 5000 / FULL_RATE, rel=0.01)


def test_the_average_follows_a_change_of_load_in_both_directions() -> None:
    pacer = FlushPacer(200, 1000)
    steady(pacer, 50_000)
    assert pacer.interval_ms == 1000
    steady(pacer, 100)
    assert pacer.interval_ms == 200


def test_minimum_above_maximum_is_refused_at_start() -> None:
    with pytest.raises(ValueError):
        FlushPacer(2000, 1000)
    with pytest.raises(SettingsError, match="CLICKSTREAM_FLUSH_MIN_INTERVAL_MS"):
        Settings.from_env({"CLICKSTREAM_FLUSH_MIN_INTERVAL_MS": "2000", "CLICKSTREAM_FLUSH_INTERVAL_MS": "1000"})
