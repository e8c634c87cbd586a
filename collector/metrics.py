"""Prometheus metrics of the collector and spool, on a registry per app (tests run many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.validation import RejectReason


class CollectorMetrics:
    """Requests by status, events accepted, events rejected by reason, spool bytes, sealed segments
    pending, fsync latency (seconds). Counts reach the registry at `publish` (before each scrape)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("clickstream_requests", "HTTP requests to /collect by status", ["status"],
                                registry=r)
        self.client_disconnects = Counter("clickstream_client_disconnects",
                                          "Requests whose client went away before the body arrived "
                                          "(not answered, nothing spooled)", registry=r)
        self.events_accepted = Counter("clickstream_events_accepted", "Events appended to the spool",
                                       registry=r)
        self.events_rejected = Counter("clickstream_events_rejected",
                                       "Events (or whole requests) refused, by reason", ["reason"],
                                       registry=r)
        self.events_by_version = Counter("clickstream_events_schema_version",
                                         "Events appended to the spool by the event schema version they were "
                                         "sent in (before the upcast; docs/schema-versioning.md)", ["version"],
                                         registry=r)
        self.rejected_evicted = Counter("clickstream_rejected_evicted",
                                        "Rejected events deleted from rejected/ by rotation", registry=r)
        self.spool_bytes = Gauge("clickstream_spool_bytes", "Bytes in unflushed spool segments", registry=r)
        self.spool_sealed_segments = Gauge("clickstream_spool_sealed_segments",
                                           "Sealed segments waiting for the flusher", registry=r)
        self.spool_torn_bytes = Counter("clickstream_spool_torn_bytes_cut",
                                        "Bytes of torn records cut at recovery", registry=r)
        self.fsync_seconds = Histogram(
            "clickstream_spool_fsync_seconds", "fsync latency of the spool",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self.cookieless_sessions = Gauge("clickstream_cookieless_sessions",
                                         "Cookieless (consent pending) visitors whose session is in memory",
                                         registry=r)
        self.cookieless_evicted = Counter("clickstream_cookieless_sessions_evicted",
                                          "Live cookieless sessions forgotten over cookieless_max_visitors "
                                          "(the visitor's next event starts a new session)", registry=r)
        # TRICKY: the hot path counts in plain ints (no prometheus lock, ~1 µs a request less);
        # `publish` moves them into the counters before /metrics is rendered. Both run on the
        # event loop, so no count is lost between them.
        self._requests: dict[int, int] = {}
        self._accepted = 0
        self._versions: dict[str, int] = {}
        self._rejected: dict[RejectReason, int] = {}
        for status in (202, 400, 413, 415, 503):  # exported as 0 before the first one
            self.requests.labels(status=str(status))
        for reason in RejectReason:
            self.events_rejected.labels(reason=reason.value)

    def request(self, status: int) -> None:
        """Count one answered request by status."""
        self._requests[status] = self._requests.get(status, 0) + 1

    def accepted(self, n: int) -> None:
        """Count `n` events appended to the spool."""
        self._accepted += n

    def versions(self, counts: dict[str, int]) -> None:
        """Count accepted events by schema version (`collector.pipeline.Outcome.versions`)."""
        for version, n in counts.items():
            self._versions[version] = self._versions.get(version, 0) + n

    def rejected(self, reason: RejectReason, n: int = 1) -> None:
        """Count `n` events (or one whole request) refused for `reason`."""
        self._rejected[reason] = self._rejected.get(reason, 0) + n

    def publish(self) -> None:
        """Move the counts taken since the last call into the Prometheus counters."""
        requests, self._requests = self._requests, {}
        accepted, self._accepted = self._accepted, 0
        rejected, self._rejected = self._rejected, {}
        versions, self._versions = self._versions, {}
        for version, n in versions.items():
            self.events_by_version.labels(version=version).inc(n)
        for status, n in requests.items():
            self.requests.labels(status=str(status)).inc(n)
        if accepted:
            self.events_accepted.inc(accepted)
        for reason, n in rejected.items():
            self.events_rejected.labels(reason=reason.value).inc(n)
