"""What the daemon knows of its cohorts beyond the state: timers, its latest verdicts, what runs now.

The state database records what was synced; a spec that fails to load is never written there, and
only the running daemon knows when each cohort's timer fires, what its worker reconciles now and
how its latest run of each cohort ended. Those live here, under one lock, for the worker to update
and the HTTP threads to copy (overview.py's `Live`).
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.daemon.overview import Verdict
from reconciler.daemon.queueing import Work
from reconciler.running.reconciling import RunReport
from reconciler.state.records import RunRecord
from reconciler.state.store import StateStore

JITTER = 0.1  # timers fire within ±10% of a cohort's schedule
CHANGES_TTL = 30.0  # seconds a /status answer may reuse each cohort's last change (read again after every run)


class Standing:
    """Timers, verdicts, the last run, what runs now, resyncs queued, and the last changes read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}  # state key -> epoch seconds of its next timer
        self._verdicts: dict[str, Verdict] = {}
        self._last_run: dict[str, Any] = {}
        self._running: tuple[Work, float] | None = None  # what the worker reconciles now, since when
        self._resync: set[str] = set()  # cohort ids due for a resync, queued
        self._runs_done = 0  # grows after each run: a cached last change read before it is stale
        self._changes: tuple[float, int, dict[str, RunRecord]] | None = None  # (monotonic, _runs_done, read)

    # --- the worker's side -----------------------------------------------------------------
    def start(self, keys: set[str], reasons: set[str]) -> set[str]:
        """The worker begins these keys; returns the cohorts queued for a resync (taken here once)."""
        with self._lock:
            self._running = (Work(set(keys), reasons=set(reasons)), time.time())
            resync, self._resync = self._resync, set()
        return resync

    def stop(self) -> None:
        with self._lock:
            self._running = None

    def finished(self, report: RunReport, schedule: Callable[[str], float]) -> None:
        """After a run: each cohort's next timer (jittered) and verdict, and the run itself."""
        now = time.time()
        with self._lock:
            self._runs_done += 1
            for o in report.outcomes:
                self._due[o.plan.key] = now + schedule(o.plan.id) * random.uniform(1 - JITTER, 1 + JITTER)
                self._verdicts[o.plan.key] = Verdict(o.result, o.error or o.plan.reason, now)
            self._last_run = {"run_id": report.run_id, "finished_at": now, "ok": report.ok, "stopped": report.stopped}

    def keep(self, keys: set[str], broken: set[str]) -> None:
        """Forget the verdicts of cohorts neither the specs nor the state name any more."""
        with self._lock:
            self._verdicts = {k: v for k, v in self._verdicts.items() if k in keys or k in broken}

    # --- the timers' side ------------------------------------------------------------------
    def due_now(self, now: float) -> set[str]:
        """The keys whose timer fired, each taken once."""
        with self._lock:
            due = {key for key, at in self._due.items() if at <= now}
            for key in due:
                del self._due[key]
        return due

    def queue_resyncs(self, due: set[str]) -> set[str]:
        """Add cohorts due for a resync; returns those not already queued."""
        with self._lock:
            new = due - self._resync
            self._resync |= new
        return new

    # --- what /status reads ----------------------------------------------------------------
    def last_changes(self, state: StateStore) -> dict[str, RunRecord]:
        """Each cohort's last change, read again only after a run or CHANGES_TTL: a page polls every few
        seconds, and the query groups the whole runs table."""
        with self._lock:
            cached, runs_done = self._changes, self._runs_done
        if cached is None or cached[1] != runs_done or time.monotonic() - cached[0] > CHANGES_TTL:
            cached = (time.monotonic(), runs_done, state.last_changes())
            with self._lock:
                self._changes = cached
        return cached[2]

    def copy(self) -> dict[str, Any]:
        """The fields of overview.Live this keeps, copied under the lock."""
        with self._lock:
            running, since = self._running or (None, None)
            return {"due": dict(self._due), "verdicts": dict(self._verdicts), "last_run": dict(self._last_run),
                    "running": running, "running_since": since}
