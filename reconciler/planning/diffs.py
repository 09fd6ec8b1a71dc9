"""The merge diff of two sorted uid streams: pure, one pass, constant memory.

Desired against synced, both strictly ascending in code-point order and cut into chunks: a
uid only in desired is an add, only in synced a remove. Each desired chunk covers a range of
uids; the synced uids of the same range are cut out with bisect and the two compared as sets,
so the work per uid is done in C. Nothing here reads, writes, logs or looks at a clock.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Tally:
    """Sizes seen by a diff while it ran; complete once the diff is exhausted."""

    desired: int = 0
    synced: int = 0


class _Cursor:
    """A position in a chunked sorted stream."""

    def __init__(self, chunks: Iterable[list[str]]) -> None:
        self._chunks = iter(chunks)
        self._buf: list[str] = []
        self._pos = 0

    def last(self) -> str | None:
        """The last uid of the chunk at hand (loading the next when this one is used up); None at the end."""
        while self._pos >= len(self._buf):
            nxt = next(self._chunks, None)
            if nxt is None:
                return None
            self._buf, self._pos = nxt, 0
        return self._buf[-1]

    def upto(self, bound: str) -> list[str]:
        """The uids of the chunk at hand that are <= bound."""
        end = bisect_right(self._buf, bound, self._pos)
        out = self._buf if self._pos == 0 and end == len(self._buf) else self._buf[self._pos:end]
        self._pos = end
        return out

    def rest_of_chunk(self) -> list[str]:
        return self.upto(self._buf[-1])


def merge_diff(desired: Iterable[list[str]], synced: Iterable[list[str]], tally: Tally) -> Iterator[tuple[list[str], list[str]]]:
    """Yield (adds, removes) per range, each sorted, ranges ascending; count both sides into `tally`.

    Each step takes, from both sides, the uids up to the smaller of the two chunks' last uids,
    so at least one chunk is used up per step and no more than a chunk a side is ever held.
    """
    d, s = _Cursor(desired), _Cursor(synced)
    while True:
        d_last, s_last = d.last(), s.last()
        if d_last is None and s_last is None:
            return
        if s_last is None:
            want = d.rest_of_chunk()
            tally.desired += len(want)
            yield want, []
        elif d_last is None:
            have = s.rest_of_chunk()
            tally.synced += len(have)
            yield [], have
        else:
            bound = min(d_last, s_last)
            want, have = d.upto(bound), s.upto(bound)
            tally.desired += len(want)
            tally.synced += len(have)
            if want != have:  # equal ranges are the common case at steady state
                wanted = set(want)
                changed = wanted.symmetric_difference(have)  # one set built, the other side only looked up
                adds = [u for u in changed if u in wanted]
                yield sorted(adds), sorted(changed.difference(adds))
