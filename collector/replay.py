"""`clickstream replay-rejected [--reason R] [--since T]`: rejected events checked again against
today's schemas; those that pass go into the spool exactly once, the rest stay with their reason.

What is read: every entry of `<rejected>/rejected-*.jsonl` and of the per-worker `<rejected>/w<i>/`
(collector.rejected) that holds an event (a body-level rejection, such as malformed JSON, has none
and is not replayable), optionally only the entries of given original reasons (`--reason`, repeatable)
and received at or after `--since`. An entry is known by `<file relative to rejected/>:<line>`: the
files are append-only and their names unique, so the key never names another entry.

The rules are those of `clickstream import` (collector.importer.check_history): every accepted schema
version, upcast to the current one, the custom event schemas, timestamps from 2000-01-01 to now +
`max_clock_skew_s`, no `consent` (pending events need the browser's request for their ids). Not the
72 h window of `POST /collect`: a fixed schema may come days later. A replayed event keeps what the
collector stamped: `received_at`, `user_agent` and `ip_hash` of its entry (entries written before
they were kept get the import's User-Agent), and its `event_id`; one without gets a UUID v5 of its key
and line, so a replay of the same entry always has the same id.

Exactly once, across repeated runs and crashes. Entries that pass are written as one spool segment
per `SEGMENT_EVENTS` events, through three steps, each durable (fsync) before the next:
  1. the segment is written hidden in the spool directory: `.<segment>.replay`, which no flusher
     reads and `clickstream import` does not clean up;
  2. a line `{"segment", "keys", "event_ids"}` is appended to the ledger
     `<rejected>/.replay/ledger.jsonl`: the commit point;
  3. the segment is published (renamed to `<segment>.seg`) for the flusher.
A run first finishes what a crashed run left: a committed segment still hidden is published, one
not committed is deleted (its entries are not in the ledger, so this run replays them again). An
entry in the ledger is never replayed again. One run at a time (a lock file beside the ledger).
Entries stay in rejected/ as written (the collector may still be appending to the newest file); the
ledger says which of them were replayed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import orjson

from clickstream.core.files import fsync_dir
from clickstream.core.settings import Settings
from clickstream.core.spool import SEALED_SUFFIX, new_segment_id, segment_created_us, write_segment
from collector.importer import BLOCK_ROWS, DEFAULT_USER_AGENT, Refusal, check_history
from collector.pipeline import ingest_row, request_stamp
from collector.schemas import EventSchemas

#: Namespace of the event ids given to replayed events that had none: uuid5(this, key + line).
REPLAY_NAMESPACE = uuid.UUID("0b6f3d5e-8f1c-5a57-9e0d-3c2b1a4f5e6d")
#: Events per replayed spool segment.
SEGMENT_EVENTS = 10_000
LEDGER_DIR = ".replay"
LEDGER = "ledger.jsonl"
HIDDEN_SUFFIX = ".replay"
NOT_REPLAYABLE = "not_replayable"


class ReplayLocked(RuntimeError):
    """Another `replay-rejected` runs on the same rejected/ directory."""


@dataclasses.dataclass
class ReplayResult:
    """What a run did: events replayed, entries still rejected by their reason today, entries skipped
    (already replayed, or filtered out), segments written, segments a crashed run left and this run
    finished or removed."""

    replayed: int = 0
    still_rejected: Counter[str] = dataclasses.field(default_factory=Counter)
    already_replayed: int = 0
    filtered_out: int = 0
    segments: list[str] = dataclasses.field(default_factory=list)
    recovered_segments: int = 0
    discarded_segments: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "still_rejected": dict(self.still_rejected),
                "already_replayed": self.already_replayed, "filtered_out": self.filtered_out,
                "segments": len(self.segments), "recovered_segments": self.recovered_segments,
                "discarded_segments": self.discarded_segments, "seconds": round(self.seconds, 2)}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One kept rejection: its key, the line's bytes and the decoded entry."""

    key: str
    line: bytes
    value: dict[str, Any]


def rejected_files(rejected_dir: Path) -> list[Path]:
    """The dead-letter files of `rejected_dir` and of its `w<i>/` folders, in name order."""
    folders = [rejected_dir, *sorted(p for p in rejected_dir.glob("w*") if p.is_dir())]
    return [path for folder in folders for path in sorted(folder.glob("rejected-*.jsonl"))]


def entries(rejected_dir: Path, files: list[Path] | None = None) -> Iterator[Entry]:
    """Every entry of `files` (default `rejected_files(rejected_dir)`), file by file, one file in
    memory at a time."""
    for path in files if files is not None else rejected_files(rejected_dir):
        rel = path.relative_to(rejected_dir).as_posix()
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:  # a torn last line of a crashed collector
                continue
            if isinstance(value, dict):
                yield Entry(f"{rel}:{number}", line, value)


def replay_event_id(key: str, line: bytes) -> str:
    """The event id of a replayed event that had none: UUID v5 of `key` and the entry's line."""
    return str(uuid.uuid5(REPLAY_NAMESPACE, key + "\n" + line.decode("utf-8", "replace")))


def parse_since(text: str) -> int:
    """`--since`: epoch ms, an RFC 3339 timestamp with offset, or a UTC date `YYYY-MM-DD`.
    Raises ValueError."""
    import datetime as dt

    from clickstream.core.times import parse_ts

    if text.isdigit():
        return int(text)
    if len(text) == 10:
        return parse_ts(text + "T00:00:00Z")
    try:
        return parse_ts(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give epoch ms, an RFC 3339 time with offset or a date "
                         f"YYYY-MM-DD (e.g. {dt.date.today().isoformat()})") from None


class Ledger:
    """`<rejected>/.replay/ledger.jsonl` with its lock: the keys replayed and the segments committed."""

    def __init__(self, rejected_dir: Path) -> None:
        self.folder = rejected_dir / LEDGER_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LEDGER
        self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ReplayLocked(f"another replay-rejected is running on {rejected_dir}") from None
        self.keys: set[str] = set()
        self.segments: set[str] = set()
        if self.path.exists():
            for line in self.path.read_bytes().splitlines():
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:  # torn by a crash while appending: not committed
                    continue
                self.segments.add(record["segment"])
                self.keys.update(record["keys"])

    def commit(self, segment_id: str, keys: list[str], event_ids: list[str]) -> None:
        """Append one committed segment (fsynced): from now on its keys are replayed."""
        line = orjson.dumps({"segment": segment_id, "keys": keys, "event_ids": event_ids}) + b"\n"
        with open(self.path, "ab") as fh:
            if fh.tell() and not self._ends_with_newline():
                fh.write(b"\n")  # after a torn line
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.folder)
        self.segments.add(segment_id)
        self.keys.update(keys)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def close(self) -> None:
        os.close(self._lock_fd)


def _publish(spool: Path, segment_id: str) -> None:
    (spool / f".{segment_id}{HIDDEN_SUFFIX}").rename(spool / (segment_id + SEALED_SUFFIX))
    fsync_dir(spool)


def recover(spool: Path, ledger: Ledger, result: ReplayResult) -> None:
    """Finish what a crashed run left in `spool`: publish committed hidden segments, delete the others."""
    for hidden in sorted(spool.glob(f".*{HIDDEN_SUFFIX}")):
        segment_id = hidden.name[1 : -len(HIDDEN_SUFFIX)]
        if segment_id in ledger.segments:
            _publish(spool, segment_id)
            result.recovered_segments += 1
        else:
            hidden.unlink()
            result.discarded_segments += 1
    fsync_dir(spool)


def replay_rejected(settings: Settings, *, reasons: Collection[str] = (), since_ms: int | None = None,
                    progress: bool | None = None, schemas: EventSchemas | None = None,
                    on_step: Callable[[str], None] | None = None) -> ReplayResult:
    """Replay the entries of `settings.rejected_dir` into `settings.spool_dir` (module docstring).

    `reasons`: only entries rejected for one of these (all when empty); `since_ms`: only entries
    received at or after it; `progress`: a progress bar on stderr (default: when it is a terminal);
    `schemas`: today's schemas (default: the bundled versions and `custom_schemas_path`); `on_step`:
    called with "written" and "committed" for each segment (tests stop the process there). Raises
    ReplayLocked, SchemaLoadError, OSError.
    """
    started = time.perf_counter()
    schemas = schemas or EventSchemas.from_settings(settings.custom_schemas_path)
    spool = settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    rejected_dir = settings.rejected_dir
    rejected_dir.mkdir(parents=True, exist_ok=True)
    result = ReplayResult()
    ledger = Ledger(rejected_dir)
    try:
        recover(spool, ledger, result)
        max_ts_ms = int(time.time() * 1000) + settings.max_clock_skew_s * 1000
        files = rejected_files(rejected_dir)
        shown = progress if progress is not None else sys.stderr.isatty()
        total = sum(path.read_bytes().count(b"\n") for path in files) if shown else 0
        batch: list[tuple[str, bytes, bytes]] = []  # (key, event id, row)
        last_us = 0
        with _Progress(total, shown) as bar:
            for entry in entries(rejected_dir, files):
                bar.advance(result.replayed + len(batch))
                value = entry.value
                if entry.key in ledger.keys:
                    result.already_replayed += 1
                    continue
                if (reasons and value.get("reason") not in reasons) or \
                        (since_ms is not None and not value.get("received_at", 0) >= since_ms):
                    result.filtered_out += 1
                    continue
                event = value.get("event")
                if not isinstance(event, dict):
                    result.still_rejected[NOT_REPLAYABLE] += 1
                    continue
                checked = check_history(event, schemas, max_ts_ms)
                if isinstance(checked, Refusal):
                    result.still_rejected[checked.reason.value] += 1
                    continue
                version, ts_ms = checked
                event["ts"] = ts_ms
                version.upcast(event)
                event_id = event.get("event_id") or replay_event_id(entry.key, entry.line)
                event["event_id"] = event_id
                stamp = request_stamp(int(value.get("received_at") or time.time() * 1000),
                                      str(value.get("user_agent") or DEFAULT_USER_AGENT)[:1024],
                                      str(value.get("ip_hash") or ""))
                batch.append((entry.key, event_id.lower().encode(), ingest_row(orjson.dumps(event), stamp)))
                if len(batch) >= SEGMENT_EVENTS:
                    last_us = _write(spool, ledger, batch, last_us, result, on_step)
                    batch = []
            if batch:
                _write(spool, ledger, batch, last_us, result, on_step)
            bar.advance(result.replayed, step=0)
    finally:
        ledger.close()
    result.seconds = time.perf_counter() - started
    return result


def _write(spool: Path, ledger: Ledger, batch: list[tuple[str, bytes, bytes]], last_us: int,
           result: ReplayResult, on_step: Callable[[str], None] | None) -> int:
    """Steps 1-3 of the module docstring for one segment; returns its creation time (µs)."""
    segment_id = new_segment_id(last_us)
    ids = [b[1] for b in batch]
    rows = [b[2] for b in batch]
    write_segment(spool, segment_id, ((ids[i : i + BLOCK_ROWS], rows[i : i + BLOCK_ROWS])
                                      for i in range(0, len(rows), BLOCK_ROWS)))
    (spool / f".{segment_id}.tmp").rename(spool / f".{segment_id}{HIDDEN_SUFFIX}")
    fsync_dir(spool)
    if on_step is not None:
        on_step("written")
    ledger.commit(segment_id, [b[0] for b in batch], [i.decode() for i in ids])
    if on_step is not None:
        on_step("committed")
    _publish(spool, segment_id)
    result.segments.append(segment_id)
    result.replayed += len(batch)
    return segment_created_us(segment_id)


class _Progress:
    """A rich progress bar on stderr over the entries read (with the events replayed so far), or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self._done = 0
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("replay-rejected"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[replayed]:,} replayed"), TimeElapsedColumn(),
                                 console=Console(stderr=True))
            self._task = self._bar.add_task("replay", total=total, replayed=0)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()

    def advance(self, replayed: int, step: int = 1) -> None:
        """`step` more entries read, `replayed` events written so far."""
        self._done += step
        if self.enabled:
            self._bar.update(self._task, completed=self._done, replayed=replayed)
