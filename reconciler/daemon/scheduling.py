"""What a replica reconciles next: urgent work (a trigger, a changed file, a new cohort) before routine
work (timers, start-up, cohorts taken over), and one log line per pass.

With 1,000 cohorts a timer pass needs minutes at MoEngage's rate; a cohort a person just merged or
triggered must not wait behind it. Work is kept per state key with its priority, the oldest first
within one; the worker takes a few keys per workspace at a time and stops starting new cohorts as
soon as urgent work waits (`urgent`), so the urgent cohort's first batch goes out a cohort later.
A pass is the set of keys one event asked for; when its last key is done, one INFO line says how
many cohorts ended how, instead of a line per unchanged cohort.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
URGENT, ROUTINE = 0, 1
URGENT_REASONS = frozenset({"http", "github", "files", "new"})  # a person or a merge is waiting for these
CHUNK = 8  # keys per workspace handed to the worker at once: cohort starts cost a read of the whole state


def priority(reason: str) -> int:
    return URGENT if reason in URGENT_REASONS else ROUTINE


@dataclass
class Waiting:
    priority: int
    since: float  # monotonic
    reasons: set[str] = field(default_factory=set)


@dataclass
class Pass:
    """The keys one event asked for, and how those reconciled so far ended."""

    reason: str
    left: set[str]
    total: int
    started: float  # monotonic
    results: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        counts = ", ".join(f"{n} {result}" for result, n in sorted(self.results.items()))
        return (f"pass ({self.reason}) done: {self.total} cohort(s) in {time.monotonic() - self.started:.1f}s"
                f"{': ' + counts if counts else ''}")


@dataclass
class Chunk:
    """What the worker does next: these keys, why, and whether to pull the repository first."""

    keys: list[str]
    reasons: set[str]
    git_pull: bool = False
    routine: bool = True  # only routine keys: it yields to urgent work that arrives meanwhile


class Scheduler:
    """Thread-safe: the timers, the watcher, the lease loop and HTTP put work; the worker takes it."""

    def __init__(self, lane: Callable[[str], str] = lambda key: "") -> None:
        self._cond = threading.Condition()
        self._waiting: dict[str, Waiting] = {}
        self._running: set[str] = set()
        self._passes: list[Pass] = []
        self._lane = lane  # key -> workspace: one lane each, sent in parallel
        self._git_pull = False
        self._closed = False
        self.urgent = threading.Event()  # set while urgent work waits

    def put(self, keys: Iterable[str], reason: str, *, git_pull: bool = False) -> None:
        keys = set(keys)
        if not keys:
            return
        prio, now = priority(reason), time.monotonic()
        with self._cond:
            for key in keys:
                w = self._waiting.setdefault(key, Waiting(prio, now))
                w.priority, w.since = min(w.priority, prio), min(w.since, now)
                w.reasons.add(reason)
            self._passes.append(Pass(reason, set(keys), len(keys), now))
            self._git_pull |= git_pull
            if prio == URGENT:
                self.urgent.set()
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Chunk | None:
        """The most pressing keys: up to CHUNK per lane, all of the best priority waiting in that lane."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._waiting or self._closed, timeout) or self._closed:
                return None
            order = sorted(self._waiting.items(), key=lambda kv: (kv[1].priority, kv[1].since, kv[0]))
            best: dict[str, int] = {}
            chosen: list[str] = []
            for key, w in order:
                lane = self._lane(key)
                if best.setdefault(lane, w.priority) != w.priority or sum(
                        1 for k in chosen if self._lane(k) == lane) >= CHUNK:
                    continue
                chosen.append(key)
            routine = all(self._waiting[k].priority == ROUTINE for k in chosen)
            reasons = set().union(*(self._waiting.pop(k).reasons for k in chosen))
            self._running = set(chosen)
            if not any(w.priority == URGENT for w in self._waiting.values()):
                self.urgent.clear()
            pull, self._git_pull = self._git_pull, False
            return Chunk(chosen, reasons, pull, routine)

    def done(self, results: dict[str, str]) -> None:
        """The worker's chunk ended: how each key done ended (keys it did not start: `requeue` or `drop`)."""
        with self._cond:
            self._running.clear()
            for key, result in results.items():
                for p in self._passes:
                    if key in p.left:
                        p.left.discard(key)
                        p.results[result] += 1
            self._log_finished()
            self._cond.notify_all()

    def requeue(self, keys: Iterable[str], reasons: set[str]) -> None:
        """Keys of a chunk that yielded before they started: back in front of their priority."""
        with self._cond:
            for key in keys:
                prio = min((priority(r) for r in reasons), default=ROUTINE)
                w = self._waiting.setdefault(key, Waiting(prio, 0.0))
                w.reasons |= reasons
                w.since = 0.0
            self._cond.notify_all()

    def drop(self, keys: Iterable[str], why: str) -> None:
        """Keys this replica no longer holds: their passes count them as handed over."""
        keys = set(keys)
        with self._cond:
            for key in keys:
                self._waiting.pop(key, None)
                for p in self._passes:
                    if key in p.left:
                        p.left.discard(key)
                        p.results[why] += 1
            if not any(w.priority == URGENT for w in self._waiting.values()):
                self.urgent.clear()
            self._log_finished()

    def _log_finished(self) -> None:
        for p in [p for p in self._passes if not p.left]:
            self._passes.remove(p)
            log.info(p.describe())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def snapshot(self) -> tuple[dict[str, set[str]], set[str]]:
        """Waiting keys with their reasons, and the keys the worker runs now: for /status."""
        with self._cond:
            return {k: set(w.reasons) for k, w in self._waiting.items()}, set(self._running)

    @property
    def pending(self) -> bool:
        with self._cond:
            return bool(self._waiting)
