"""What each POST /reconcile asked for and how it ended, kept in the state so any replica can answer.

A trigger is a row per cohort (state key) it names, `queued` when it is written. The worker that
begins a cohort claims every row of it not yet `done` (`running`, under its chunk's attempt id)
before it reads the specs' sources, and settles them when the cohort's run ends. Order comes from
the transactions, not from clocks: a trigger written after the claim stays `queued` for the next
run, so a trigger that arrives while its cohort runs waits for a run that began after it. A row
left `running` by a process that died is claimed again by the next run of its cohort (only the
lease holder runs a cohort, so no other run can still own it); one nothing ever ran is `unknown`
once it is older than `STALE_AFTER`.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from reconciler.common.statuses import HEALTHY
from reconciler.state.database import Database
from reconciler.state.keys import split_key
from reconciler.state.schema import triggers

QUEUED, RUNNING, DONE = "queued", "running", "done"
CONVERGED, FAILED, UNKNOWN = "converged", "failed", "unknown"
STALE_AFTER = 24 * 3600.0  # seconds: a trigger no run took by then is `unknown`
KEPT = 7 * 24 * 3600.0  # seconds: older triggers are pruned


@dataclass(frozen=True)
class Settled:
    """How one cohort's run ended, for the triggers it answered."""

    result: str
    adds: int = 0
    removes: int = 0
    unconfirmed: int = 0
    refused: int = 0
    error: str | None = None


class Triggers:
    """The cs_triggers table: written by the HTTP threads, claimed and settled by the worker."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, trigger_id: str, keys: Iterable[str], source: str) -> None:
        now = time.time()
        rows = [{"trigger_id": trigger_id, "cohort_id": k, "source": source[:32], "state": QUEUED,
                 "requested_at": now, "adds": 0, "removes": 0, "unconfirmed": 0, "refused": 0} for k in sorted(set(keys))]
        with self.db.transaction() as conn:
            conn.execute(triggers.delete().where(triggers.c.requested_at < now - KEPT))
            if rows:
                conn.execute(triggers.insert(), rows)

    def claim(self, keys: Iterable[str], attempt: str, run_id: str | None = None) -> None:
        """The worker begins these cohorts: every trigger of theirs not done is answered by this run."""
        keys = sorted(set(keys))
        if not keys:
            return
        with self.db.transaction() as conn:
            conn.execute(triggers.update().where(triggers.c.cohort_id.in_(keys), triggers.c.state != DONE)
                         .values(state=RUNNING, attempt=attempt, run_id=run_id))

    def settle(self, attempt: str, results: dict[str, Settled], run_id: str | None = None) -> None:
        """The cohorts of this attempt that ended: their triggers are done, with the outcome."""
        now = time.time()
        with self.db.transaction() as conn:
            for key, s in results.items():
                conn.execute(triggers.update().where(triggers.c.attempt == attempt, triggers.c.cohort_id == key,
                                                     triggers.c.state == RUNNING)
                             .values(state=DONE, result=s.result[:32], adds=s.adds, removes=s.removes,
                                     unconfirmed=s.unconfirmed, refused=s.refused, error=s.error,
                                     finished_at=now, run_id=run_id))

    def release(self, attempt: str, keys: Iterable[str]) -> None:
        """Cohorts of this attempt that did not run (handed over, yielded, shut down): queued again."""
        keys = sorted(set(keys))
        if not keys:
            return
        with self.db.transaction() as conn:
            conn.execute(triggers.update().where(triggers.c.attempt == attempt, triggers.c.cohort_id.in_(keys),
                                                 triggers.c.state == RUNNING).values(state=QUEUED, attempt=None))

    def outcome(self, trigger_id: str, now: float | None = None) -> dict | None:
        """The trigger as GET /runs/{id} shows it; None when no such trigger is kept."""
        with self.db.connection() as conn:
            rows = conn.execute(sa.select(triggers).where(triggers.c.trigger_id == trigger_id)
                                .order_by(triggers.c.cohort_id)).all()
        return summary(trigger_id, rows, time.time() if now is None else now) if rows else None


def cohort_state(row: sa.Row, now: float) -> str:
    if row.state == DONE:
        return CONVERGED if row.result in {s.value for s in HEALTHY} else FAILED
    if now - row.requested_at > STALE_AFTER:
        return UNKNOWN
    return row.state


def summary(trigger_id: str, rows: list[sa.Row], now: float) -> dict:
    """Each cohort's state and counts, and the trigger's: converged only when every cohort converged."""
    cohorts = []
    for row in rows:
        workspace, cohort = split_key(row.cohort_id)
        cohorts.append({"cohort": cohort, "workspace": workspace, "state": cohort_state(row, now),
                        "result": row.result, "adds": row.adds, "removes": row.removes,
                        "unconfirmed": row.unconfirmed, "refused": row.refused, "error": row.error,
                        "run_id": row.run_id, "finished_at": row.finished_at})
    states = {c["state"] for c in cohorts}
    if RUNNING in states or (QUEUED in states and states - {QUEUED}):
        overall = RUNNING  # some cohort runs, or some are done and the rest wait: under way
    elif QUEUED in states:
        overall = QUEUED
    elif UNKNOWN in states:
        overall = UNKNOWN
    else:
        overall = CONVERGED if states == {CONVERGED} else FAILED
    totals = {k: sum(c[k] for c in cohorts) for k in ("adds", "removes", "unconfirmed", "refused")}
    return {"run": trigger_id, "state": overall, "terminal": overall in (CONVERGED, FAILED, UNKNOWN),
            "source": rows[0].source, "requested_at": rows[0].requested_at, "cohorts": cohorts, **totals}

