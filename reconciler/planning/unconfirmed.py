"""What to send for uids whose last batch got no answer: pure, no I/O.

MoEngage might have such a uid or might lack it, whatever the state's members table says.
The merge diff runs as usual on the confirmed members (M) against the desired uids (D); its
adds (D - M) and removes (M - D) already cover the uncertain uids whose writes change M. The
others still need sending, with no member write when their answer comes:
- re-adds: uncertain, in M and desired (D - M skipped them; MoEngage may lack them);
- re-removes: uncertain, not in M and not desired (M - D skipped them; MoEngage may have them).
In `add_only` nothing is removed, so every uncertain uid that is not desired stays uncertain.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field


@dataclass
class Unconfirmed:
    """A cohort's uncertain uids (ascending), which of them the state has as members, and what
    the diff said about them as it streamed by."""

    uids: list[str]
    present: set[str]
    _added: set[str] = field(default_factory=set)  # uncertain uids the diff adds (desired, not members)
    _removed: set[str] = field(default_factory=set)  # uncertain uids the diff removes (members, not desired)

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def absent(self) -> int:
        """Uncertain uids the state does not count as members: MoEngage may still have them."""
        return len(self.uids) - len(self.present)

    def fresh(self) -> "Unconfirmed":
        """The same uids for a diff that starts over (a source found out of order, a failed tool)."""
        return Unconfirmed(self.uids, self.present)

    def note(self, added: list[str], removed: list[str]) -> None:
        """Look at one range of the diff (each list ascending); cost is in the uncertain uids only."""
        self._added.update(_among(self.uids, added))
        self._removed.update(_among(self.uids, removed))

    def resends(self) -> tuple[list[str], list[str]]:
        """(re-adds, re-removes) once the diff is done, each ascending."""
        re_adds = [u for u in self.uids if u in self.present and u not in self._removed]
        re_removes = [u for u in self.uids if u not in self.present and u not in self._added]
        return re_adds, re_removes


def _among(candidates: list[str], sorted_uids: list[str]) -> list[str]:
    """The candidates (ascending) that appear in sorted_uids, found by bisection within its range."""
    if not sorted_uids or not candidates:
        return []
    lo, hi = bisect_left(candidates, sorted_uids[0]), bisect_right(candidates, sorted_uids[-1])
    found = []
    for u in candidates[lo:hi]:
        i = bisect_left(sorted_uids, u)
        if i < len(sorted_uids) and sorted_uids[i] == u:
            found.append(u)
    return found
