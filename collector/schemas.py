"""Versioned telemetry schemas and custom event schemas: what the collector validates an event
against, and how an accepted event is brought to the current shape before the spool.

Versions (docs/schema-versioning.md): `schemas/event/<MODEL>-<REVISION>-<ADDITION>.json`, every
version still accepted, each with its version in `$id`; `schemas/event.schema.json` is a copy of
the newest (the current shape, what the spool, the flusher and ClickHouse see). An event names its
version in `schema`: `"event/1-1-0"` or that version's `$id`. Without `schema` it is the oldest
accepted version it satisfies (the oldest first, so today's beacons stay valid; a later ADDITION
only adds optional fields, so an event using them is that version). A named version that is not
in `schemas/event/` (unknown, or retired by removing its file) is rejected with reason
`unsupported_schema_version`, path `/schema`.

Upcasting: an accepted event goes through the upcasters from its version to the current one
(`UPCASTS`: version -> function changing the event in place into the next version's shape, None
for an ADDITION), then loses its `schema` field. 1-0-0 -> 1-1-0 only adds the optional `seq`.

Custom event schemas (Snowplow's self-describing events): `CLICKSTREAM_CUSTOM_SCHEMAS_PATH` holds
one JSON Schema (draft 2020-12) per custom event type, `<type>.json`, for that type's `props`
(e.g. `signup_started.json` requiring `plan` in {free, pro}). An event of a registered type that
passed its version's schema has its `props` (`{}` when absent) validated too; a violation is a
`schema_violation` with a path under `/props`. Unregistered types keep the generic `props` rules.

Speed: every validator (jsonschema-rs) is compiled once per version and per custom type when the
collector starts; a request whose events all name the same version (or none) is validated in one
call of that version's batch validator (BENCHMARKS.md "Collector").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from clickstream.core import resources
from clickstream.core.schema import SchemaValidator
from collector.validation import EventValidator, RejectReason

#: Folder of the versioned event schemas inside `schemas/`.
EVENT_DIR = "event"
#: `$id` of event schema version V: ID_PREFIX + V + ".json".
ID_PREFIX = "https://clickstream.dev/schemas/event/"
#: The short name of version V in an event's `schema` field: SHORT_PREFIX + V.
SHORT_PREFIX = "event/"
_VERSION = re.compile(r"^(0|[1-9][0-9]*)-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)$")
_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Event = dict[str, Any]
Upcast = Callable[[Event], None]


def schemaver(version: str) -> tuple[int, int, int]:
    """(MODEL, REVISION, ADDITION) of a SchemaVer string `"1-1-0"`. Raises ValueError otherwise."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not a SchemaVer version (MODEL-REVISION-ADDITION, e.g. 1-0-0): {version!r}")
    return int(match[1]), int(match[2]), int(match[3])


#: version -> upcaster into the next accepted version's shape (in place), or None when an event of
#: that version already is one of the next (an ADDITION of optional fields). Every accepted version
#: but the current one needs an entry (checked when the schemas load).
#: 1-0-0 -> 1-1-0: 1-1-0 adds the optional `seq`: nothing to change.
UPCASTS: dict[str, Upcast | None] = {"1-0-0": None}


@dataclasses.dataclass(frozen=True)
class SchemaVersion:
    """One accepted event schema version: its SchemaVer, compiled validator, and the upcasters
    that bring an event of it to the current shape, in order."""

    version: str
    validator: EventValidator
    upcasts: tuple[Upcast, ...]

    @property
    def short_name(self) -> str:
        return SHORT_PREFIX + self.version

    def upcast(self, event: Event) -> None:
        """Bring an event of this version to the current shape, in place: each upcaster in turn,
        then the `schema` field removed (the spool holds the current shape only)."""
        for step in self.upcasts:
            step(event)
        event.pop("schema", None)


class SchemaLoadError(ValueError):
    """A schema file is missing, unreadable, not a valid JSON Schema, or misnamed (names the file)."""


def bundled_versions() -> dict[str, dict[str, Any]]:
    """Every event schema shipped in `schemas/event/` (package data): version -> parsed schema."""
    folder = resources.schemas().joinpath(EVENT_DIR)
    out: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            out[entry.name.removesuffix(".json")] = orjson.loads(entry.read_bytes())
    return out


def load_custom_schemas(directory: Path | None) -> dict[str, dict[str, Any]]:
    """The custom event schemas of `directory`: event type -> JSON Schema of its `props`.

    Empty when `directory` is None. Raises SchemaLoadError naming the file when the directory is
    missing, a file name is not an event type (`^[a-z][a-z0-9_]{0,63}$` + `.json`), a file is not
    JSON, or not a valid draft 2020-12 schema.
    """
    if directory is None:
        return {}
    if not directory.is_dir():
        raise SchemaLoadError(f"custom event schemas: {directory} is not a directory")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        name = path.name.removesuffix(".json")
        if not _TYPE.match(name):
            raise SchemaLoadError(f"custom event schema {path}: the file name must be the event type "
                                  "(^[a-z][a-z0-9_]{0,63}$) + .json")
        try:
            schema = orjson.loads(path.read_bytes())
            jsonschema.Draft202012Validator.check_schema(schema)
        except (OSError, orjson.JSONDecodeError, jsonschema.SchemaError) as exc:
            message = exc.message if isinstance(exc, jsonschema.SchemaError) else str(exc)
            raise SchemaLoadError(f"custom event schema {path}: {message}") from exc
        if not isinstance(schema, dict):
            raise SchemaLoadError(f"custom event schema {path}: must be a JSON object")
        schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
        out[name] = schema
    return out


class EventSchemas:
    """Every accepted event schema version, compiled, plus the custom event schemas.

    `versions`: version -> schema (default: `bundled_versions()`); `upcasts`: version -> upcaster
    to the next version (default `UPCASTS`); `custom`: event type -> schema of its props (default
    none). Raises SchemaLoadError when a version is misnamed, its `$id` does not carry it, or an
    upcaster is missing.
    """

    def __init__(self, versions: Mapping[str, dict[str, Any]] | None = None,
                 upcasts: Mapping[str, Upcast | None] | None = None,
                 custom: Mapping[str, dict[str, Any]] | None = None) -> None:
        versions = bundled_versions() if versions is None else versions
        upcasts = UPCASTS if upcasts is None else upcasts
        if not versions:
            raise SchemaLoadError("no event schema version accepted (schemas/event/ is empty)")
        try:
            ordered = sorted(versions, key=schemaver)
        except ValueError as exc:
            raise SchemaLoadError(f"event schema file name: {exc}") from None
        chain: list[Upcast] = []
        built: list[SchemaVersion] = []
        for version in reversed(ordered):  # newest first: each version's chain is its upcaster + the next's
            schema = versions[version]
            if schema.get("$id") != f"{ID_PREFIX}{version}.json":
                raise SchemaLoadError(f"schemas/event/{version}.json: $id must be {ID_PREFIX}{version}.json")
            if built:
                if version not in upcasts:
                    raise SchemaLoadError(f"event schema {version} has no upcaster to the next version "
                                          "(collector.schemas.UPCASTS)")
                step = upcasts[version]
                if step is not None:
                    chain.insert(0, step)
            built.append(SchemaVersion(version, EventValidator(schema), tuple(chain)))
        #: oldest first
        self.versions: tuple[SchemaVersion, ...] = tuple(reversed(built))
        self.current = self.versions[-1]
        self.oldest = self.versions[0]
        self._named: dict[str, SchemaVersion] = {}
        for v in self.versions:
            self._named[v.short_name] = v
            self._named[f"{ID_PREFIX}{v.version}.json"] = v
        self.custom: dict[str, SchemaValidator] = {
            name: SchemaValidator(schema) for name, schema in (custom or {}).items()}
        self._accepted_text = ", ".join(v.short_name for v in self.versions)

    @classmethod
    def from_settings(cls, custom_schemas_path: Path | None) -> EventSchemas:
        """The bundled versions and the custom schemas of `custom_schemas_path` (None: none)."""
        return cls(custom=load_custom_schemas(custom_schemas_path))

    def named(self, event: Event) -> SchemaVersion | None:
        """The version `event` names in `schema`; the oldest when it names none; None when it names
        one that is not accepted. `event` must be a dict."""
        name = event.get("schema")
        if name is None:
            return self.oldest
        return self._named.get(name) if type(name) is str else None

    def batch_version(self, events: list[Any]) -> SchemaVersion | None:
        """The version of a whole batch when every value of `events` is an event naming one and the
        same accepted version (or all none) and satisfies it: one validator call for the batch.
        None says "check each" (`check`), not that one is invalid. Custom schemas are not checked here."""
        first = events[0]
        if type(first) is not dict:
            return None
        name = first.get("schema")
        if name is not None:  # else the oldest's batch validator refuses any event naming another version
            for event in events:
                if type(event) is not dict or event.get("schema") != name:
                    return None
        version = self.named(first)
        return version if version is not None and version.validator.all_valid(events) else None

    def all_valid(self, events: list[Any]) -> bool:
        """True when `batch_version(events)` finds one."""
        return self.batch_version(events) is not None

    def check(self, event: Any, valid: bool = False) -> SchemaVersion | tuple[str, str, RejectReason]:
        """Validate one event: its version's schema (unless `valid` says it passed it already), then
        its custom props schema. Does not change the event.

        Returns the event's SchemaVersion when it passes (`SchemaVersion.upcast` brings it to the
        current shape), else (JSON Pointer, message, reason).
        """
        if type(event) is not dict:
            path, message = self.oldest.validator.first_error(event) or ("", "invalid event")
            return path, message, RejectReason.SCHEMA_VIOLATION
        version = self.named(event)
        if version is None:
            return ("/schema", f"event schema {event.get('schema')!r} is not accepted; accepted: "
                    f"{self._accepted_text} (docs/schema-versioning.md)", RejectReason.UNSUPPORTED_SCHEMA_VERSION)
        if not valid and not version.validator.is_valid(event):
            later = None if "schema" in event else self._later_version(event)
            if later is None:
                path, message = version.validator.first_error(event) or ("", "invalid event")
                return path, message, RejectReason.SCHEMA_VIOLATION
            version = later
        if self.custom:
            props_schema = self.custom.get(event["type"])
            if props_schema is not None:
                found = props_schema.first_error(event.get("props", {}))
                if found is not None:
                    return (f"/props{found[0]}", f"custom event {event['type']!r}: {found[1]}",
                            RejectReason.SCHEMA_VIOLATION)
        return version

    def _later_version(self, event: Event) -> SchemaVersion | None:
        """For an event naming no version that fails the oldest: the oldest later version it
        satisfies (an event using a later ADDITION's fields), else None."""
        for version in self.versions[1:]:
            if version.validator.is_valid(event):
                return version
        return None
