"""What a resync sends: pure, no I/O.

A resync repairs a segment whose MoEngage side drifted (edited in the dashboard, a restored
backup), so it trusts nothing the state says MoEngage has. Of desired uids D, confirmed members
M and leavers L (every uid the changelog says was removed, plus the uncertain uids of batches
whose answer never came):
- adds: D - M, as in any plan (a member write on their answer);
- re-adds: D ∩ M, sent again with no member write (the state already has them);
- removes: M - D, as in any plan (mirror only);
- re-removes: L - D - M, uids that left and may have come back by hand (mirror only; no member
  write: the state already lacks them).
A uid uncertain and desired is in D - M or D ∩ M; uncertain, undesired and a member is in M - D;
uncertain, undesired and not a member is in L: every uncertain uid is settled by a resync too.
Three streams, each strictly ascending, are merged a range at a time, as diffs.merge_diff does.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reconciler.planning.diffs import Tally, _Cursor


@dataclass
class ResyncRange:
    """One range of a resync, each list ascending."""

    adds: list[str]
    re_adds: list[str]
    removes: list[str]
    re_removes: list[str]


def resync_diff(desired: Iterable[list[str]], synced: Iterable[list[str]], leavers: Iterable[list[str]],
                tally: Tally) -> Iterator[ResyncRange]:
    """Yield the four classes range by range; each range is bounded by the smaller last uid of the
    desired and synced chunks at hand, and takes the leavers up to the same bound."""
    d, s, gone = _Cursor(desired), _Cursor(synced), _Cursor(leavers)
    while True:
        d_last, s_last = d.last(), s.last()
        if d_last is None and s_last is None:
            rest = _upto(gone, None)
            if rest:
                yield ResyncRange([], [], [], rest)
            return
        bound = min(b for b in (d_last, s_last) if b is not None)
        want = d.upto(bound) if d_last is not None else []
        have = s.upto(bound) if s_last is not None else []
        tally.desired += len(want)
        tally.synced += len(have)
        wanted, had = set(want), set(have)
        yield ResyncRange([u for u in want if u not in had], [u for u in want if u in had],
                          [u for u in have if u not in wanted],
                          [u for u in _upto(gone, bound) if u not in wanted and u not in had])


def _upto(cursor: _Cursor, bound: str | None) -> list[str]:
    """Every uid of a cursor up to `bound` (None: all the rest), across chunks."""
    taken: list[str] = []
    while (last := cursor.last()) is not None:
        taken.extend(cursor.upto(last if bound is None else bound))
        if bound is not None and last > bound:
            break
    return taken
