"""A plan's changes on their way to apply: spilled to temporary files, counted and sampled, and the
streams a diff reads, closed when it ends.

A plan streams: the adds and removes are written to temporary files as they are found, counted
and packed into a request estimate on the way. Memory stays bounded; apply reads them back.
"""
from __future__ import annotations

import gc
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from reconciler.moengage.batching import Envelope, Packer
from reconciler.planning.plans import SAMPLES, CohortPlan
from reconciler.planning.refusals import HeldBack
from reconciler.sources.reading import Source

if TYPE_CHECKING:
    from reconciler.snapshots.moving import Keeping
    from reconciler.snapshots.placement import Placement


class Spill:
    """Uids of one action, in order, in a temporary file: counted, sampled, read back once or more."""

    def __init__(self, envelope: Envelope, max_bytes: int, *, resend: bool = False) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="cohortsync-plan-")
        self._packer = Packer(envelope, max_bytes)
        self.envelope = envelope
        self.resend = resend  # uncertain uids whose member rows are already right: settle without writing them
        self.count = 0
        self.samples: list[str] = []

    def write(self, uids: list[str]) -> None:
        if not uids:
            return
        self._packer.add_all(uids)  # counts requests; raises CohortApiError for an unsendable uid
        self._file.write("\n".join(uids).encode("utf-8") + b"\n")
        self.count += len(uids)
        if len(self.samples) < SAMPLES:
            self.samples.extend(uids[: SAMPLES - len(self.samples)])

    @property
    def requests(self) -> int:
        return self._packer.requests

    def __iter__(self) -> Iterator[str]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield line[:-1].decode("utf-8")

    def close(self) -> None:
        self._file.close()


@dataclass
class PreparedPlan:
    """A plan and the spilled changes apply will send; close() frees the files."""

    plan: CohortPlan
    removes: Spill | None = None
    adds: Spill | None = None
    re_removes: Spill | None = None  # uncertain uids, not members, not desired
    re_adds: Spill | None = None  # uncertain uids, members, desired
    held: HeldBack | None = None  # what the diff kept from MoEngage: refused uids (planning/refusals.py)
    placement: "Placement | None" = None  # where its members are kept, and where the config wants them
    keeping: "Keeping | None" = None  # the warehouse snapshot its members are kept in (None: the local state)

    def spills(self) -> list[Spill]:
        return [s for s in self._all() if s is not None and s.count]

    def close(self) -> None:
        for spill in self._all():
            if spill is not None:
                spill.close()

    def _all(self) -> tuple[Spill | None, ...]:
        return self.removes, self.re_removes, self.adds, self.re_adds


def chained(chunks: Iterable[list[str]], extra: list[str]) -> Iterator[list[str]]:
    yield from chunks
    yield extra


def hashing(chunks: Iterable[list[str]], digest: "hashlib._Hash") -> Iterator[list[str]]:
    for chunk in chunks:
        digest.update("\n".join(chunk).encode("utf-8") + b"\n")
        yield chunk


@contextmanager
def reading(source: Source) -> Iterator[Iterator[list[str]]]:
    """A source's chunks, closed when the attempt ends: a query given up half-read (found out of
    order) ends its transaction now, on a live connection, not whenever the collector gets to it."""
    chunks = source.chunks()
    try:
        yield chunks
    finally:
        close = getattr(chunks, "close", None)
        try:
            if close is not None:
                close()
        except ValueError:  # a tool's feeding thread still reads it: it is closed when that thread lets go
            pass


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a diff.

    A 10M-member diff allocates millions of short-lived row tuples and lists, none in a cycle;
    the collector would scan them over and over (about 15% of a plan's time). Reference
    counting still frees everything at once; the collector resumes afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


