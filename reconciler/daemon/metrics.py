"""Prometheus metrics of the daemon, in a registry of its own (no module-level state)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reconciler.moengage.client import ClientStats
from reconciler.running.reconciling import RunReport

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reconciles = Counter("cohortsync_reconciles", "Cohort reconciles by result", ["result"], registry=r)
        self.duration = Histogram("cohortsync_reconcile_duration_seconds", "Duration of one reconcile run",
                                  registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
        self.added = Counter("cohortsync_members_added", "Members added in MoEngage", ["cohort"], registry=r)
        self.removed = Counter("cohortsync_members_removed", "Members removed in MoEngage", ["cohort"], registry=r)
        self.requests = Counter("cohortsync_requests", "Requests to MoEngage by HTTP status", ["status"], registry=r)
        self.retries = Counter("cohortsync_retries", "Requests retried after 5xx, drops or timeouts", registry=r)
        self.throttled = Counter("cohortsync_throttled", "429 answers waited out", registry=r)
        self.rate_waits = Counter("cohortsync_rate_limit_waits", "Requests that waited for the rate window", registry=r)
        self.synced = Gauge("cohortsync_synced_members", "Members synced per cohort", ["cohort"], registry=r)
        self.unconfirmed = Gauge("cohortsync_unconfirmed_members", "Uids of batches whose answer never came, per "
                                 "cohort: the next plan settles them", ["cohort"], registry=r)
        self.refused = Gauge("cohortsync_refused_members", "Uids MoEngage refused (or that can never be valid), "
                             "per cohort: kept and not sent again (`cohortsync refused`)", ["cohort"], registry=r)
        self.last_success = Gauge("cohortsync_last_success_timestamp_seconds", "Last time a cohort converged",
                                  ["cohort"], registry=r)
        self.triggers = Counter("cohortsync_triggers", "Reconciles asked for, by source", ["source"], registry=r)
        self.up = Gauge("cohortsync_ready", "1 when specs are loaded and the state is reachable", registry=r)
        self.held = Gauge("cohortsync_cohort_held", "1 for each cohort whose lease this replica holds",
                          ["cohort", "replica"], registry=r)
        self.replicas = Gauge("cohortsync_replicas", "Live replicas sharing the state", registry=r)
        self.notifications = Counter("cohortsync_notifications", "Alerts per notify target (by index and scheme) "
                                     "and result: sent, failed (after retries), retried, dropped, deduplicated",
                                     ["target", "result"], registry=r)
        self._notified: dict[tuple[str, str], int] = {}
        self._seen: dict[str, ClientStats] = {}  # per workspace: each has a client of its own
        self._rate_waits_seen: dict[str, int] = {}

    def observe_run(self, report: RunReport, seconds: float, synced: dict[str, int], converged_at: dict[str, float],
                    unconfirmed: dict[str, int] | None = None, refused: dict[str, int] | None = None) -> None:
        self.duration.observe(seconds)
        for o in report.outcomes:
            self.reconciles.labels(o.result).inc()
            if o.sent_adds:
                self.added.labels(o.plan.id).inc(o.sent_adds)
            if o.sent_removes:
                self.removed.labels(o.plan.id).inc(o.sent_removes)
        for cohort, count in synced.items():
            self.synced.labels(cohort).set(count)
        for cohort, ts in converged_at.items():
            self.last_success.labels(cohort).set(ts)
        for cohort, count in (unconfirmed or {}).items():
            self.unconfirmed.labels(cohort).set(count)
        for cohort, count in (refused or {}).items():
            self.refused.labels(cohort).set(count)

    def observe_client(self, stats: ClientStats, rate_waits: int, workspace: str = "default") -> None:
        """Fold a workspace's client counters in, by difference since the last look."""
        seen, waits_seen = self._seen.get(workspace, ClientStats()), self._rate_waits_seen.get(workspace, 0)
        for status, n in stats.statuses.items():
            delta = n - seen.statuses[status]
            if delta:
                self.requests.labels(status).inc(delta)
        self.retries.inc(stats.retries - seen.retries)
        self.throttled.inc(stats.throttled - seen.throttled)
        self.rate_waits.inc(rate_waits - waits_seen)
        self._seen[workspace] = ClientStats(statuses=stats.statuses.copy(), retries=stats.retries,
                                            throttled=stats.throttled)
        self._rate_waits_seen[workspace] = rate_waits

    def observe_notifier(self, counts: dict[tuple[str, str], int]) -> None:
        """Fold the notifier's counts in, by difference since the last look."""
        for key, n in counts.items():
            if n > self._notified.get(key, 0):
                self.notifications.labels(*key).inc(n - self._notified.get(key, 0))
        self._notified = {**self._notified, **counts}

    def forget_client(self) -> None:
        """New clients and a new notifier (after SIGHUP) start their counters at zero."""
        self._seen, self._rate_waits_seen, self._notified = {}, {}, {}

    def observe_holding(self, replica: str, keys: set[str], replicas: int) -> None:
        """Which cohorts this replica holds now (the others say the same of theirs)."""
        self.held.clear()
        for key in keys:
            self.held.labels(key, replica).set(1)
        self.replicas.set(replicas)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
