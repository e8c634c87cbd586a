"""The outbox on a real sqlite file: insert-once per lead_id, delivery states, survival of SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from stitcher.outbox import Entry, Outbox, State, Target
from tests.conftest import ROOT


def entry(lead_id: str, event: bytes = b'{"e":1}', fingerprint: str = "f1") -> Entry:
    return Entry(lead_id, f"id-{lead_id}", fingerprint, b'{"r":1}', event, 1)


def test_first_put_wins_and_later_puts_get_the_stored_entry(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    stored, created = box.put(entry("L1"), webhook=True)
    assert created and stored.event == b'{"e":1}'
    again, created = box.put(entry("L1", event=b'{"e":2}', fingerprint="f2"), webhook=True)
    assert not created
    assert (again.event, again.fingerprint) == (b'{"e":1}', "f1")
    assert box.get("L2") is None
    box.close()


def test_delivery_states_per_target(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put(entry("A"), webhook=True)
    box.put(entry("B"), webhook=False)
    assert [e.lead_id for e in box.pending(Target.CLICKHOUSE)] == ["A", "B"]
    assert [e.lead_id for e in box.pending(Target.WEBHOOK)] == ["A"]
    box.mark("A", Target.CLICKHOUSE, State.DELIVERED)
    box.mark("A", Target.WEBHOOK, State.FAILED, "webhook answered 400")
    assert [e.lead_id for e in box.pending(Target.CLICKHOUSE)] == ["B"]
    assert box.count(Target.WEBHOOK) == 0
    assert box.count(Target.WEBHOOK, State.FAILED) == 1
    assert box.count(Target.WEBHOOK, State.NONE) == 1
    box.close()


def test_an_entry_put_before_sigkill_is_there_after_reopening(tmp_path: Path) -> None:
    child = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from stitcher.outbox import Entry, Outbox
        box = Outbox(Path({str(tmp_path)!r}))
        box.put(Entry("L9", "id-L9", "fp", b"{{}}", b'{{"frozen":true}}', 5), webhook=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no checkpoint
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    box = Outbox(tmp_path)
    got = box.get("L9")
    assert got is not None and got.event == b'{"frozen":true}'
    assert [e.lead_id for e in box.pending(Target.WEBHOOK)] == ["L9"]
    box.close()
