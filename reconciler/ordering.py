"""Sorted, unique uid streams in Python's code-point order, with memory bounded.

The merge diff needs both sides in the same order. A source may already deliver that order
(a sorted file, an ORDER BY with a binary collation): `checked` passes it through and raises
OutOfOrder the moment it is not. Otherwise `external_sort` sorts in runs of `run_size` uids,
spilled to temporary files and merged, so memory stays flat whatever the cohort size.
"""
from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

RUN_SIZE = 500_000  # uids sorted in memory at once (about 40 MB of short strings)


class OutOfOrder(Exception):
    """A stream that was expected sorted was not; the caller falls back to sorting."""


def checked(uids: Iterable[str]) -> Iterator[str]:
    """Pass a sorted stream through, dropping duplicates; raise OutOfOrder on a step back."""
    prev: str | None = None
    for uid in uids:
        if prev is not None and uid <= prev:
            if uid == prev:
                continue
            raise OutOfOrder(f"{uid!r} came after {prev!r}")
        prev = uid
        yield uid


def unique(sorted_uids: Iterable[str]) -> Iterator[str]:
    prev: str | None = None
    for uid in sorted_uids:
        if uid != prev:
            yield uid
            prev = uid


def external_sort(uids: Iterable[str], run_size: int = RUN_SIZE) -> Iterator[str]:
    """Sorted and unique, whatever the input size; uids must hold no newline (sources check)."""
    runs: list[IO[bytes]] = []
    try:
        run: list[str] = []
        for uid in uids:
            run.append(uid)
            if len(run) >= run_size:
                runs.append(_spill(run))
                run = []
        if not runs:
            run.sort()
            yield from unique(run)
            return
        if run:
            runs.append(_spill(run))
        del run
        yield from unique(heapq.merge(*(_read(r) for r in runs)))
    finally:
        for r in runs:
            r.close()


def _spill(run: list[str]) -> IO[bytes]:
    run.sort()
    fh = tempfile.TemporaryFile(prefix="cohortsync-sort-")
    fh.write("\n".join(unique(run)).encode("utf-8"))
    fh.write(b"\n")
    fh.seek(0)
    return fh


def _read(fh: IO[bytes]) -> Iterator[str]:
    for line in fh:
        yield line[:-1].decode("utf-8")
