"""Prometheus metrics of the collector and spool, on a registry per app (tests run many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.validation import RejectReason


class CollectorMetrics:
    """Counters named as in the collector issue: requests by status, events accepted, events
    rejected by reason, spool bytes, sealed segments pending, fsync latency (seconds)."""

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
        self._status = {s: self.requests.labels(status=str(s)) for s in (202, 400, 413, 415, 503)}
        self._reasons = {reason: self.events_rejected.labels(reason=reason.value) for reason in RejectReason}

    def request(self, status: int) -> None:
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = self.requests.labels(status=str(status))
        child.inc()

    def rejected(self, reason: RejectReason, n: int = 1) -> None:
        self._reasons[reason].inc(n)
