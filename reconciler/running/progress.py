"""Progress of an apply for people at a terminal: a bar per cohort on a TTY, nothing otherwise."""
from __future__ import annotations

import sys
import threading
from typing import IO, Protocol

from tqdm import tqdm

from reconciler.planning.plans import CohortPlan


class Progress(Protocol):
    def start(self, plan: CohortPlan) -> None: ...
    def advance(self, uids: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, plan: CohortPlan) -> None:
        pass

    def advance(self, uids: int) -> None:
        pass

    def finish(self) -> None:
        pass


class BarProgress:
    """One tqdm bar per cohort being sent, on stderr, cleared when the cohort is done; workspaces
    sent at the same time (one thread each) get a line each."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bars: dict[int, tqdm] = {}
        self._lock = threading.Lock()

    def start(self, plan: CohortPlan) -> None:
        self.finish()
        with self._lock:
            self._bars[threading.get_ident()] = tqdm(
                total=plan.adds + plan.removes, desc=plan.key, unit="uid", unit_scale=True, file=self._stream,
                leave=False, dynamic_ncols=True, position=len(self._bars))

    def advance(self, uids: int) -> None:
        bar = self._bars.get(threading.get_ident())
        if bar is not None:
            with self._lock:
                bar.update(uids)

    def finish(self) -> None:
        with self._lock:
            bar = self._bars.pop(threading.get_ident(), None)
            if bar is not None:
                bar.close()


def for_terminal(quiet: bool, stream: IO[str] | None = None) -> Progress:
    stream = stream or sys.stderr  # looked up now: tests and tools swap sys.stderr
    return BarProgress(stream) if not quiet and stream.isatty() else NoProgress()
