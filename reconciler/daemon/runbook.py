"""Run ids for triggers: what POST /reconcile answers, the worker claims and settles, GET /runs/{id} reads.

The rows live in the state (state/triggers.py), so a trigger sent to one replica and run by another
is answered by any of them, and one written before a restart is claimed by the run after it.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from reconciler.common.errors import StateError
from reconciler.running.reconciling import RunReport
from reconciler.state.store import StateStore
from reconciler.state.triggers import Settled, Triggers

log = logging.getLogger(__name__)
NOT_STARTED = "not started"


class RunBook:
    """The daemon's side of cs_triggers."""

    def __init__(self, state: StateStore) -> None:
        self.triggers = Triggers(state)

    def new(self, keys: Iterable[str], source: str) -> str:
        """Write the trigger down before its work is queued or forwarded; returns its run id."""
        trigger_id = uuid.uuid4().hex
        self.triggers.record(trigger_id, keys, source)
        return trigger_id

    def begin(self, keys: list[str]) -> str:
        """The worker begins these cohorts (their sources not read yet): it answers their waiting triggers."""
        attempt = uuid.uuid4().hex
        try:
            self.triggers.claim(keys, attempt)
        except StateError as exc:  # left queued: the next run of these cohorts claims them
            log.warning("could not claim the triggers of %s: %s", ", ".join(keys), exc)
        return attempt

    def end(self, attempt: str, report: RunReport, keys: list[str], again: set[str]) -> None:
        """The cohorts that ran are settled with their outcome; those to run again wait (queued);
        those that did not start and will not (no such cohort) failed."""
        results: dict[str, Settled] = {}
        for o in report.outcomes:
            if o.yielded or o.plan.key in results:
                continue  # the first outcome of a key is its run; a resync after it is not what was asked
            results[o.plan.key] = Settled(str(o.result), o.sent_adds, o.sent_removes, o.unconfirmed, o.refused,
                                          o.error or (None if o.ok else o.plan.reason))
        for key in keys:
            if key not in results and key not in again:
                results[key] = Settled(NOT_STARTED, error="no spec names this cohort, or it was not started")
        try:
            self.triggers.settle(attempt, results, report.run_id)
            self.triggers.release(attempt, again)
        except StateError as exc:  # left running: the next run of these cohorts claims them again
            log.warning("could not settle the triggers of %s: %s", ", ".join(keys), exc)

    def failed(self, attempt: str, keys: list[str], error: str) -> None:
        """The run of these cohorts raised (the state went away): their triggers failed, if it can be said."""
        try:
            self.triggers.settle(attempt, {k: Settled("failed", error=error) for k in keys})
        except StateError as exc:
            log.warning("could not settle the triggers of %s: %s", ", ".join(keys), exc)

    def outcome(self, run: str) -> dict | None:
        return self.triggers.outcome(run)
