"""A coalescing work queue for one worker: repeated triggers merge, every cohort gets its turn.

Pending work is a set of cohort ids (or "all"), with the reasons that asked for it. `take`
hands the worker everything pending at once, so a burst of triggers becomes one reconcile and
no cohort waits behind another's repeats.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

ALL = "*"


@dataclass
class Work:
    """What the worker should do next: these cohorts (or all), and why."""

    cohorts: set[str] = field(default_factory=set)
    everything: bool = False
    reasons: set[str] = field(default_factory=set)
    git_pull: bool = False

    @property
    def only(self) -> list[str]:
        """The --cohort selection: empty means every cohort."""
        return [] if self.everything else sorted(self.cohorts)

    def describe(self) -> str:
        what = "all cohorts" if self.everything else ", ".join(sorted(self.cohorts))
        return f"{what} ({', '.join(sorted(self.reasons))})"


class CoalescingQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: Work | None = None
        self._closed = False

    def put(self, cohorts: set[str] | str, reason: str, *, git_pull: bool = False) -> None:
        with self._cond:
            if self._pending is None:
                self._pending = Work()
            work = self._pending
            if cohorts == ALL:
                work.everything = True
            else:
                work.cohorts |= set(cohorts)
            work.reasons.add(reason)
            work.git_pull |= git_pull
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Work | None:
        """Everything pending, or None when the queue closed or the timeout passed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending is not None or self._closed, timeout):
                return None
            work, self._pending = self._pending, None
            return work

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def peek(self) -> Work | None:
        """A copy of what is pending, for /status; the worker still takes the original."""
        with self._cond:
            w = self._pending
            return None if w is None else Work(set(w.cohorts), w.everything, set(w.reasons), w.git_pull)

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._pending is not None
