"""Executing one cohort's plan: batch by batch, each acknowledged batch committed at once.

This is the only code that both sends and writes state. The order is the whole safety story:
a batch goes out, a 200 comes back, its members are committed in one transaction, then the
next batch. A crash anywhere re-sends at most the batch in flight.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from reconciler.moengage.batching import pack
from reconciler.moengage.client import MoEngageClient
from reconciler.common.errors import ApiError, FatalApiError, Interrupted, StateError
from reconciler.planning.planner import PreparedPlan
from reconciler.planning.plans import ORPHANED, CohortPlan
from reconciler.running.progress import NoProgress, Progress
from reconciler.state.store import RunRecord, StateStore

log = logging.getLogger(__name__)

CONVERGED, FAILED, PRUNED, INTERRUPTED = "converged", "failed", "pruned", "interrupted"


@dataclass
class CohortOutcome:
    """What happened to one cohort in one run."""

    plan: CohortPlan
    result: str  # converged, pruned, failed, stopped, or the plan's status when nothing was sent
    sent_adds: int = 0
    sent_removes: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result not in ("failed", "blocked", "error", "stopped", "stale")

    def as_json(self) -> dict:
        return {**self.plan.as_json(), "result": self.result, "sent_adds": self.sent_adds,
                "sent_removes": self.sent_removes, "requests_sent": self.requests, "retries": self.retries,
                "throttled": self.throttled, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "error": self.error}


def execute(prepared: PreparedPlan, client: MoEngageClient, state: StateStore, run: RunRecord,
            stop: threading.Event | None = None, progress: Progress | None = None) -> CohortOutcome:
    """Send one actionable plan. Raises FatalApiError (after recording it) when the run must stop.

    `stop` is looked at before each batch: a shutdown finishes the batch in flight, commits it,
    and leaves the rest for the next run.
    """
    plan = prepared.plan
    outcome = CohortOutcome(plan, FAILED)
    stats = client.stats
    start = (stats.requests, stats.retries, stats.throttled, stats.bytes_sent, time.monotonic())
    progress = progress or NoProgress()
    progress.start(plan)
    try:
        for spill in prepared.spills():
            action = spill.envelope.action
            for batch in pack(spill.envelope, spill, client.settings.max_payload_bytes):
                if stop is not None and stop.is_set():
                    raise Interrupted("shutting down")
                for part in client.send(batch):
                    state.commit_batch(plan.id, plan.name, plan.description, action, part.uids)
                    if action == "add_members":
                        outcome.sent_adds += len(part.uids)
                    else:
                        outcome.sent_removes += len(part.uids)
                    progress.advance(len(part.uids))
                    log.info("cohort %s: %s of %d uids acknowledged (%d bytes)", plan.id, action, len(part.uids),
                             len(part.body))
        outcome.result = PRUNED if plan.status == ORPHANED else CONVERGED
    except FatalApiError as exc:
        outcome.error = str(exc)
        raise
    except Interrupted:
        outcome.result, outcome.error = INTERRUPTED, "stopped by a shutdown; the next run sends the rest"
    except (ApiError, StateError) as exc:
        outcome.error = str(exc)
        log.error("cohort %s: %s", plan.id, exc)
    finally:
        progress.finish()
        outcome.requests = stats.requests - start[0]
        outcome.retries, outcome.throttled = stats.retries - start[1], stats.throttled - start[2]
        outcome.bytes, outcome.seconds = stats.bytes_sent - start[3], time.monotonic() - start[4]
        _finish(state, run, outcome)
    return outcome


def _finish(state: StateStore, run: RunRecord, outcome: CohortOutcome) -> None:
    """Write the run row and the cohort's outcome; a pruned orphan is forgotten."""
    plan = outcome.plan
    run.status, run.error, run.finished_at = outcome.result, outcome.error, time.time()
    run.sent_adds, run.sent_removes, run.requests = outcome.sent_adds, outcome.sent_removes, outcome.requests
    run.retries, run.throttled, run.bytes = outcome.retries, outcome.throttled, outcome.bytes
    run.failed = (plan.adds - outcome.sent_adds) + (plan.removes - outcome.sent_removes)
    try:
        state.record_run(run)
        if outcome.result == PRUNED:
            state.forget(plan.id)
        elif outcome.result == CONVERGED:
            state.record_outcome(plan.id, plan.name, plan.description, status=CONVERGED, converged=True,
                                 spec_digest=plan.spec_digest, source_digest=plan.source_digest)
            log.info("cohort %s: converged (+%d -%d)", plan.id, outcome.sent_adds, outcome.sent_removes)
        else:
            state.record_outcome(plan.id, plan.name, plan.description, status=outcome.result, error=outcome.error)
    except StateError as exc:
        outcome.result, outcome.error = FAILED, f"{outcome.error or ''} {exc}".strip()
