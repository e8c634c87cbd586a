"""The adaptive flush interval (flusher.pacing): computed independently from the rule it documents."""

from __future__ import annotations

import pytest

from clickstream.core.settings import Settings, SettingsError
from flusher.pacing import DUTY, FlushPacer


def test_starts_at_the_minimum_and_idle_flushes_do_not_move_it() -> None:
    pacer = FlushPacer(200, 1000)
    assert pacer.interval_ms == 200
    pacer.observe(0.0)
    assert pacer.interval_ms == 200


def test_light_traffic_stays_at_the_minimum() -> None:
    pacer = FlushPacer(200, 1000)
    for _ in range(10):
        pacer.observe(0.010)  # 10 ms inserts: 50 ms at a 20 % duty, below the minimum
    assert pacer.interval_ms == 200


def test_heavy_traffic_reaches_about_one_insert_per_second() -> None:
    pacer = FlushPacer(200, 1000)
    for _ in range(20):
        pacer.observe(0.400)  # 400 ms inserts would need 2 s at a 20 % duty: capped at the maximum
    assert pacer.interval_ms == 1000


def test_in_between_the_interval_is_insert_time_over_duty() -> None:
    pacer = FlushPacer(200, 1000)
    for _ in range(50):
        pacer.observe(0.100)
    assert pacer.interval_ms == pytest.approx(0.100 / DUTY * 1000)


def test_the_average_follows_a_change_of_load_in_both_directions() -> None:
    pacer = FlushPacer(200, 1000)
    for _ in range(30):
        pacer.observe(0.400)
    assert pacer.interval_ms == 1000
    for _ in range(30):
        pacer.observe(0.005)
    assert pacer.interval_ms == 200


def test_minimum_above_maximum_is_refused_at_start() -> None:
    with pytest.raises(ValueError):
        FlushPacer(2000, 1000)
    with pytest.raises(SettingsError, match="CLICKSTREAM_FLUSH_MIN_INTERVAL_MS"):
        Settings.from_env({"CLICKSTREAM_FLUSH_MIN_INTERVAL_MS": "2000", "CLICKSTREAM_FLUSH_INTERVAL_MS": "1000"})
