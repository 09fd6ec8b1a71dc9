"""Which alerts a run makes: pure, no I/O.

An alert is sent on a change of state, not on every run: a cohort failing every 15 minutes
alerts once, then once more when it recovers. The state before the run is each cohort's
`last_status` as the run found it (`RunReport.before`), so the CLI and the daemon agree, and a
restarted daemon does not alert again for a failure it already reported.
"""
from __future__ import annotations

import fnmatch
import json
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.common.statuses import Status
from reconciler.running.reconciling import RunReport
from reconciler.settings.model import DEFAULT_WORKSPACE, NotifyTarget

FAILED, BLOCKED, ERROR, UNCONFIRMED, REFUSED = "failed", "blocked", "error", "unconfirmed", "refused"
RECOVERED, LEASE_LOST, DAEMON_STOPPED, TEST = "recovered", "lease_lost", "daemon_stopped", "test"
KINDS = (FAILED, BLOCKED, ERROR, UNCONFIRMED, REFUSED, RECOVERED, LEASE_LOST, DAEMON_STOPPED)  # as in config.schema.json
PROBLEMS = {Status.FAILED: FAILED, Status.BLOCKED: BLOCKED, Status.ERROR: ERROR, Status.UNCONFIRMED: UNCONFIRMED}


@dataclass(frozen=True)
class Event:
    """One alert: what happened to which cohort, with the run to look up (`history --cohort ID`)."""

    kind: str
    cohort: str | None
    reason: str | None = None
    run_id: str | None = None
    workspace: str = DEFAULT_WORKSPACE
    previous: str | None = None  # the cohort's status before this run
    counts: dict[str, int] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    host: str = field(default_factory=socket.gethostname)

    def as_json(self) -> dict[str, Any]:
        return {"format_version": 1, **asdict(self)}

    def body(self) -> bytes:
        """The webhook's body, exactly the bytes that are signed."""
        return json.dumps(self.as_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    def title(self) -> str:
        return f"cohortsync: {self.kind}" + (f": {self.cohort}" if self.cohort else "")

    def text(self) -> str:
        """One sentence for chat targets."""
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts.items() if v)
        parts = [f"cohort {self.cohort} ({self.workspace})" if self.cohort else f"host {self.host}",
                 self.kind + (f" (was {self.previous})" if self.previous else ""),
                 f"run {self.run_id}" if self.run_id else "", counts, self.reason or ""]
        return "; ".join(p for p in parts if p)


def events_of(report: RunReport) -> list[Event]:
    """The alerts of one run: a problem status the cohort was not already in, or the first success after
    one; and `refused` when uids were refused in this run (each uid is refused once: it is not sent again)."""
    if report.dry_run:
        return []
    events = []
    for outcome in report.outcomes:
        record = report.before.get(outcome.plan.key)
        previous = record.last_status if record else None
        plan = outcome.plan
        counts = {"desired": plan.desired or 0, "synced": plan.synced, "adds": plan.adds, "removes": plan.removes,
                  "sent_adds": outcome.sent_adds, "sent_removes": outcome.sent_removes,
                  "unconfirmed": outcome.unconfirmed, "refused": outcome.refused}
        new = len(outcome.refused_now) + plan.refused_new
        if new:
            events.append(Event(REFUSED, plan.id, f"{new:,} uids refused in this run (sample: "
                                f"{', '.join(outcome.sample_refused)}); `cohortsync refused --cohort {plan.id}` "
                                "lists them with MoEngage's error", report.run_id, plan.workspace, previous, counts))
        kind = PROBLEMS.get(outcome.result)
        if kind is None and outcome.ok and previous in PROBLEMS.values():
            kind = RECOVERED
        elif kind is None or previous == kind:
            continue
        events.append(Event(kind, plan.id, outcome.error or plan.reason, report.run_id, plan.workspace, previous,
                            counts))
    return events


def lease_lost(holder: str, reason: str) -> Event:
    """A daemon lost its writer lease (several daemons on one PostgreSQL state)."""
    return Event(LEASE_LOST, None, f"{holder}: {reason}")


def daemon_stopped(reason: str) -> Event:
    return Event(DAEMON_STOPPED, None, reason)


def sample_event() -> Event:
    return Event(TEST, None, "a test event from `cohortsync notify test`")


def wants(target: NotifyTarget, event: Event) -> bool:
    """Whether a target takes this event: its kinds (test events always) and cohort globs (empty: all)."""
    if event.kind != TEST and target.events and event.kind not in target.events:
        return False
    if target.cohorts and event.cohort is not None:
        return any(fnmatch.fnmatchcase(event.cohort, glob) for glob in target.cohorts)
    return True
