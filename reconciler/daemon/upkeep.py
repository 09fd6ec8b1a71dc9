"""The daemon's slow chores, on its timer thread: resyncs when due, and the changelog pruned.

A cohort is resynced every `resync` (its spec's, else `daemon.resync`; unset: never), counted
from its last resync run in the state (so a restart neither repeats nor forgets one), or from
the daemon's start when it never had one. The changelog loses its entries older than
`changelog.retention` a few hundred rows per transaction, so pruning never holds the state
database for long.
"""
from __future__ import annotations

import logging
import time

from reconciler.settings.model import Settings
from reconciler.specs.cohorts import SpecSet
from reconciler.state.keys import split_key
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)
PRUNE_STEP = 500  # changelog entries deleted per transaction


class Upkeep:
    def __init__(self, state: StateStore, started: float | None = None) -> None:
        self.state = state
        self.started = time.time() if started is None else started
        self._asked: dict[str, float] = {}  # when this daemon last found each cohort due: a resync that
        # sent nothing (an empty or broken cohort) leaves no run, and must not come back every few seconds

    def resyncs_due(self, settings: Settings, specs: SpecSet | None, now: float) -> set[str]:
        """Cohorts whose resync interval has passed since their last resync."""
        if specs is None:
            return set()
        intervals = {cid: spec.resync or settings.daemon.resync for cid, spec in specs.specs.items()
                     if not spec.suspended}
        if not any(intervals.values()):
            return set()
        last: dict[str, float] = {}
        for key, at in self.state.changelog.last_resyncs().items():  # by state key: a cohort in several workspaces has several
            cohort = split_key(key)[1]
            last[cohort] = max(at, last.get(cohort, 0.0))
        due = {cid for cid, every in intervals.items()
               if every and now - max(last.get(cid, 0.0), self._asked.get(cid, self.started)) >= every}
        self._asked.update(dict.fromkeys(due, now))
        return due

    def prune_step(self, settings: Settings, now: float) -> int:
        """Delete one step of changelog entries past the retention; how many went."""
        pruned = self.state.changelog.prune(now - settings.changelog.retention, PRUNE_STEP)
        if pruned:
            log.debug("changelog: %d entries older than the retention pruned", pruned)
        return pruned
