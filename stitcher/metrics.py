"""Prometheus metrics of the stitcher (`/metrics` of `serve` and `clickstream stitcher`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class StitcherMetrics:
    """Requests by status, leads created / repeated / conflicting, relay deliveries, retries, pending."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter("clickstream_stitcher_requests", "POST /stitch answers", ["status"], registry=r)
        self.client_disconnects = Counter("clickstream_stitcher_client_disconnects",
                                          "POST /stitch requests whose client went away before the body "
                                          "arrived (not answered)", registry=r)
        self.leads_created = Counter("clickstream_stitcher_leads_created",
                                     "lead_created events emitted (201)", registry=r)
        self.repeats = Counter("clickstream_stitcher_repeats",
                               "Repeated lead_ids with the same data, answered with the original event (200)",
                               registry=r)
        self.conflicts = Counter("clickstream_stitcher_conflicts",
                                 "Repeated lead_ids with different data (409)", registry=r)
        self.deliveries = Counter("clickstream_stitcher_relay_deliveries",
                                  "Events delivered by the relay", ["target"], registry=r)
        self.retries = Counter("clickstream_stitcher_relay_retries",
                               "Relay delivery attempts retried after a transient error", ["target"], registry=r)
        self.failures = Counter("clickstream_stitcher_relay_failures",
                                "Events refused for good by a target (kept in the outbox as failed)",
                                ["target"], registry=r)
        self.pending = Gauge("clickstream_stitcher_relay_pending",
                             "Events in the outbox awaiting delivery", ["target"], registry=r)
        self.unattributed = Counter("clickstream_stitcher_unattributed",
                                    "Leads recorded without (part of) their attribution because the visitor's "
                                    "telemetry was missing after the wait, by reason", ["reason"], registry=r)
        self.session_waits = Counter("clickstream_stitcher_session_waits",
                                     "POST /stitch requests that waited for the visitor's telemetry "
                                     "(CLICKSTREAM_STITCH_SESSION_WAIT_S)", registry=r)
        for reason in ("no_visitor_data", "session_not_seen", "page_view_not_seen"):
            self.unattributed.labels(reason=reason)  # exported as 0 before the first one
        self.seconds = Histogram("clickstream_stitcher_stitch_seconds",
                                 "Time to answer POST /stitch with a new event (flush + attribution + outbox)",
                                 registry=r)
