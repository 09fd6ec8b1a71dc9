"""The merge diff of two sorted uid streams: pure, one pass, constant memory.

Desired against synced, both strictly ascending in code-point order: a uid only in desired is
an add, only in synced a remove. Nothing here reads, writes, logs or looks at a clock.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ADD, REMOVE = "add", "remove"


@dataclass
class Tally:
    """Sizes seen by a diff while it ran; complete once the diff is exhausted."""

    desired: int = 0
    synced: int = 0


def merge_diff(desired: Iterable[str], synced: Iterable[str], tally: Tally) -> Iterator[tuple[str, str]]:
    """Yield (ADD, uid) and (REMOVE, uid) in uid order; count both sides into `tally`."""
    d_it, s_it = iter(desired), iter(synced)
    d, s = next(d_it, None), next(s_it, None)
    nd = ns = 0
    while d is not None and s is not None:
        if d == s:
            nd += 1
            ns += 1
            d, s = next(d_it, None), next(s_it, None)
        elif d < s:
            nd += 1
            yield ADD, d
            d = next(d_it, None)
        else:
            ns += 1
            yield REMOVE, s
            s = next(s_it, None)
    while d is not None:
        nd += 1
        yield ADD, d
        d = next(d_it, None)
    while s is not None:
        ns += 1
        yield REMOVE, s
        s = next(s_it, None)
    tally.desired, tally.synced = nd, ns
