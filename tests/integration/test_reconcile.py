"""`clickstream reconcile`: clean after the fold, catches a corrupted roll-up (exit 1, naming the table
and the day), `--repair` rebuilds the day and the next run is clean. Real CLI process, real chDB."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from pathlib import Path

from clickstream.core.clickhouse import connect, migrate
from reports.fold import fold
from tests.conftest import ROOT
from tests.integration.test_rollups import DAY0, Store, generate


def cli(data_dir: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "reconcile", "--no-progress", *args],
                          capture_output=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "CLICKSTREAM_DATA_DIR": str(data_dir), "CLICKSTREAM_CLICKHOUSE_URL": ""})
    return done.returncode, done.stdout.decode() + done.stderr.decode()[-2000:]


def test_reconcile_catches_a_corrupt_roll_up_and_repairs_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        migrate(client)
        store = Store(client)
        store.insert(generate(random.Random(3), 300))
        assert fold(client) is not None
    finally:
        client.close()
    code, out = cli(data_dir)
    assert code == 0, out
    assert "checked: clean" in out

    day = DAY0 + dt.timedelta(days=4)
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        client.command(f"INSERT INTO traffic_daily (site_id, day, visitors, sessions) SELECT 'a.example', "
                       f"toDate('{day}'), uniqExactState('intruder'), 1")
        client.command(f"INSERT INTO landing_daily (site_id, day, landing_path, visitors, sessions) SELECT "
                       f"'b.example', toDate('{day + dt.timedelta(days=1)}'), '/bogus', uniqExactState('x'), 3")
        bad = client.query(f"SELECT visitors, sessions FROM v_traffic_range(site = 'a.example', from = '{day}', "
                           f"to = '{day}')").result_rows
    finally:
        client.close()
    assert bad and bad[0][1] > 0

    code, out = cli(data_dir, "--site", "a.example")
    assert code == 1, out
    assert f"DIFF traffic_daily {day} a.example" in out
    assert "DIFF landing_daily" not in out  # another site's difference is not this run's business
    code, out = cli(data_dir, "--from", str(day), "--to", str(day + dt.timedelta(days=1)))
    assert code == 1, out
    assert f"DIFF traffic_daily {day} a.example" in out
    assert f"DIFF landing_daily {day + dt.timedelta(days=1)} b.example" in out

    code, out = cli(data_dir, "--repair")
    assert code == 0, out
    assert f"repaired 2 day(s): {day}, {day + dt.timedelta(days=1)}" in out
    code, out = cli(data_dir)
    assert code == 0 and "checked: clean" in out, out
