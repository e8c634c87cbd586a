"""Settings from `CLICKSTREAM_*` (clickstream.core.settings): types, units, and errors naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clickstream.core.settings import Settings, SettingsError
from tests.conftest import ROOT


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8000, Path("./data"))
    assert s.max_body_bytes == 64 * 1024 and s.max_batch_events == 100
    assert s.max_event_age_s == 72 * 3600 and s.max_clock_skew_s == 300
    assert s.spool_fsync_interval_ms == 20
    assert s.cors_allow_origins == ("*",)
    assert s.spool_dir == Path("./data/spool") and s.rejected_dir == Path("./data/rejected")
    assert s.resolved_clickhouse_url == f"chdb://{Path('./data/clickhouse').resolve()}"
    assert (s.sql_host, s.sql_port, s.sql_user, s.sql_password.get_secret_value()) == (
        "127.0.0.1", 8123, "dashboards", "")
    assert (s.script_path, s.collect_path, s.forwarded_allow_ips) == ("/beacon.js", "/collect", "127.0.0.1")
    # the daily salts live outside the data directory unless told otherwise
    assert Path("./data").resolve() not in s.resolved_salt_dir.resolve().parents
    assert Settings.from_env({"CLICKSTREAM_SALT_DIR": "/run/cs"}).resolved_salt_dir == Path("/run/cs")


def test_values_parse_by_type() -> None:
    s = Settings.from_env({
        "CLICKSTREAM_PORT": "9001",
        "CLICKSTREAM_SPOOL_MAX_BYTES": "2_000_000",
        "CLICKSTREAM_SPOOL_FSYNC_INTERVAL_MS": "0",
        "CLICKSTREAM_DATA_DIR": "/srv/clickstream",
        "CLICKSTREAM_CORS_ALLOW_ORIGINS": "https://a.example, https://b.example,",
        "CLICKSTREAM_FLUSH_RETRY_MAX_S": "2.5",
        "CLICKSTREAM_CLICKHOUSE_URL": "http://default:pw@ch:8123/clickstream",
        "UNRELATED": "x",
    })
    assert s.port == 9001
    assert s.spool_max_bytes == 2_000_000
    assert s.spool_fsync_interval_ms == 0
    assert s.data_dir == Path("/srv/clickstream") and s.spool_dir == Path("/srv/clickstream/spool")
    assert s.cors_allow_origins == ("https://a.example", "https://b.example")
    assert s.flush_retry_max_s == 2.5
    assert s.resolved_clickhouse_url == "http://default:pw@ch:8123/clickstream"


def test_overrides_win_over_env_and_none_is_ignored() -> None:
    s = Settings.from_env({"CLICKSTREAM_PORT": "9001", "CLICKSTREAM_HOST": "0.0.0.0"},
                          overrides={"port": 9002, "host": None})
    assert (s.port, s.host) == (9002, "0.0.0.0")


@pytest.mark.parametrize(("var", "value"), [
    ("CLICKSTREAM_PORT", "eighty"),
    ("CLICKSTREAM_PORT", "0"),
    ("CLICKSTREAM_PORT", "70000"),
    ("CLICKSTREAM_MAX_BODY_BYTES", "64k"),
    ("CLICKSTREAM_MAX_BATCH_EVENTS", "-1"),
    ("CLICKSTREAM_SPOOL_FSYNC_INTERVAL_MS", "-5"),
    ("CLICKSTREAM_SPOOL_MAX_BYTES", "1.5"),
    ("CLICKSTREAM_MAX_CLOCK_SKEW_S", "-1"),
    ("CLICKSTREAM_FLUSH_RETRY_MAX_S", "soon"),
    ("CLICKSTREAM_CLICKHOUSE_URL", "mysql://db"),
    ("CLICKSTREAM_SQL_PORT", "0"),
    ("CLICKSTREAM_SQL_MAX_CONCURRENT_QUERIES", "0"),
    ("CLICKSTREAM_SQL_MAX_EXECUTION_TIME_S", "-1"),
    ("CLICKSTREAM_SQL_USER", ""),
    ("CLICKSTREAM_SCRIPT_PATH", "js/app.js"),
    ("CLICKSTREAM_SCRIPT_PATH", "/js/../app.js"),
    ("CLICKSTREAM_SCRIPT_PATH", "/collect"),
    ("CLICKSTREAM_COLLECT_PATH", "/metrics"),
    ("CLICKSTREAM_COLLECT_PATH", "/beacon.js"),
    ("CLICKSTREAM_COLLECT_PATH", "/api/e/"),
    ("CLICKSTREAM_COOKIELESS_MAX_VISITORS", "0"),
])
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: value})
    assert var in str(info.value)


def test_secrets_are_hidden_from_repr() -> None:
    s = Settings.from_env({"CLICKSTREAM_STITCH_TOKEN": "s3cret-stitch", "CLICKSTREAM_SQL_PASSWORD": "s3cret-sql"})
    assert s.stitch_token.get_secret_value() == "s3cret-stitch"
    assert s.sql_password.get_secret_value() == "s3cret-sql"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_bad_secret_is_named_without_its_value() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"CLICKSTREAM_STITCH_TOKEN": "s3cret", "CLICKSTREAM_LEAD_WEBHOOK_URL": "ftp://x"})
    assert "CLICKSTREAM_LEAD_WEBHOOK_URL" in str(info.value) and "s3cret" not in str(info.value)


def test_cli_help_shows_the_settings_defaults() -> None:
    proc = subprocess.run([sys.executable, "-m", "clickstream.cli", "serve", "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    text = " ".join(proc.stdout.split())  # click wraps long help lines
    assert "[CLICKSTREAM_PORT, default 8000]" in text
    assert "[CLICKSTREAM_DATA_DIR, default data]" in text


def test_collector_fails_at_start_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    env.update({"CLICKSTREAM_DATA_DIR": str(tmp_path), "CLICKSTREAM_SPOOL_MAX_BYTES": "lots"})
    proc = subprocess.run([sys.executable, "-m", "clickstream.cli", "collector", "--port", "1"], env=env,
                          cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert b"CLICKSTREAM_SPOOL_MAX_BYTES" in proc.stderr
    assert b"Traceback" not in proc.stderr
