"""The wheel works outside the checkout: built, installed into a fresh venv, run from an empty directory.

A non-editable install is what a Dockerfile does; package data (schemas, migrations, beacon.js)
must come from the installed package, never from the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from load.procs import start
from tests.conftest import ROOT, make_event, wait_for

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel (and its dependencies) installed; yields its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    # built from a copy of the files git knows (setuptools writes build/ into the tree it builds)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    source = work / "source"
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(work / "dist")],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (work / "dist").glob("clickstream-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    subprocess.run([str(work / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=900)
    yield work / "venv/bin"


def test_version_and_package_data_come_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    version = subprocess.run([str(installed / "clickstream"), "--version"], cwd=tmp_path, capture_output=True,
                             text=True, check=True, timeout=60)
    assert "version" in version.stdout and "0+unknown" not in version.stdout
    probe = ("import clickstream.core.resources as r, collector; "
             "print(collector.__file__, len([f for f in r.migrations().iterdir() if f.name.endswith('.sql')]), "
             "r.static('collector', 'beacon.js').is_file(), r.load_schema('event.schema.json')['$schema'])")
    out = subprocess.run([str(installed / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert "site-packages" in out[0] and str(ROOT) not in out[0]
    assert int(out[1]) >= 8 and out[2] == "True" and out[3].startswith("https://json-schema.org/")


def test_serve_from_an_empty_directory_takes_an_event_and_reads_it_back(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "cwd"
    empty.mkdir()
    # two collector workers: the hidden `worker` command and the owner's socket work from the wheel too
    server = start("serve", tmp_path / "data", {"CLICKSTREAM_SQL_PASSWORD": "adm", "CLICKSTREAM_WORKERS": "2"},
                   ready_path="/readyz",
                   timeout=120, program=[str(installed / "clickstream")], cwd=empty)
    try:
        event = make_event(site_id="wheel.example")
        answer = httpx.post(server.url + "/collect", json=event, headers={"User-Agent": BROWSER_UA}, timeout=30)
        assert answer.status_code == 202, answer.text
        assert httpx.get(server.url + "/beacon.js", timeout=30).status_code == 200
        # the dashboard's page and vendored chart library are package data of reports.dashboard
        assert httpx.get(server.sql_url + "/dashboard", auth=("dashboards", "adm"), timeout=30).status_code == 200
        chart = httpx.get(server.sql_url + "/dashboard/static/vendor/uPlot.iife.min.js", auth=("dashboards", "adm"),
                          timeout=30)
        assert chart.status_code == 200 and chart.text.startswith("/*! https://github.com/leeoniya/uPlot")

        def stored() -> list[str]:
            query = subprocess.run(
                [str(installed / "clickstream"), "sql", "--format", "json", "--url", server.sql_url,
                 "SELECT toString(event_id) AS id FROM events WHERE site_id = 'wheel.example'"],
                cwd=empty, env=server.env, capture_output=True, text=True, timeout=60)
            assert query.returncode == 0, query.stderr
            return query.stdout.split()

        rows = wait_for(stored, timeout_s=60, what="the event in ClickHouse")
        assert rows == [f'{{"id":"{event["event_id"]}"}}']
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert not list(empty.iterdir())  # nothing written outside the data directory


def test_migrate_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(installed / "clickstream"), "migrate", "--data-dir", str(tmp_path / "data")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "migrations up to date" in proc.stdout
