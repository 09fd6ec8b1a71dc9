"""Progress of an apply for people at a terminal: a bar per cohort on a TTY, nothing otherwise."""
from __future__ import annotations

import sys
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
    """One tqdm bar per cohort being sent, on stderr, cleared when the cohort is done."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar: tqdm | None = None

    def start(self, plan: CohortPlan) -> None:
        self.finish()
        self._bar = tqdm(total=plan.adds + plan.removes, desc=plan.id, unit="uid", unit_scale=True,
                         file=self._stream, leave=False, dynamic_ncols=True)

    def advance(self, uids: int) -> None:
        if self._bar is not None:
            self._bar.update(uids)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def for_terminal(quiet: bool, stream: IO[str] | None = None) -> Progress:
    stream = stream or sys.stderr  # looked up now: tests and tools swap sys.stderr
    return BarProgress(stream) if not quiet and stream.isatty() else NoProgress()
