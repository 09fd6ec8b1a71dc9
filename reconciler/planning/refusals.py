"""What a plan holds back from MoEngage: uids refused before, and uids that can never be valid.

A standing refusal (state/refused.py) is for one action: the uid's desired presence when MoEngage
refused it. While the diff still asks for that action, the uid is held back (not sent, not counted
in adds or removes, so the guards count what will really be sent). Once the diff no longer asks
for it (the source's row changed: the uid left, or came back), the refusal is stale and apply
drops it, so a later change tries it again; `apply --retry-refused` sends every held-back uid.
A uid MoEngage could never accept (moengage/uids.py) is refused here, before anything is sent.
"""
from __future__ import annotations

from collections.abc import Mapping

from reconciler.common.actions import Action
from reconciler.moengage.uids import unsendable
from reconciler.planning.plans import SAMPLES, CohortPlan
from reconciler.state.records import CohortRecord, RefusedUid
from reconciler.state.store import StateStore


class HeldBack:
    """Filters a plan's adds and removes as they stream out of the diff; memory: the refusals only."""

    def __init__(self, standing: Mapping[str, RefusedUid] | None = None, *, retry: bool = False) -> None:
        self.standing = dict(standing or {})
        self.retry = retry  # --retry-refused: standing refusals are sent again, not held back
        self.by_action = {a: {u for u, r in self.standing.items() if r.presence == a} for a in (Action.ADD, Action.REMOVE)}
        self.seen: set[str] = set()  # standing refusals the diff still asks for
        self.held = 0
        self.local: list[tuple[str, str]] = []  # (uid, reason) refused before sending
        self.samples: list[str] = []

    def fresh(self) -> "HeldBack":
        """The same refusals with nothing counted: for a diff that starts over."""
        return HeldBack(self.standing, retry=self.retry)

    def adds(self, uids: list[str]) -> list[str]:
        """Uids to add, less standing refusals and uids that can never be valid (refused now)."""
        uids = self._standing(Action.ADD, uids)
        bad = unsendable(uids)
        if bad:
            self.local.extend(bad)
            self._sample([u for u, _ in bad])
            refused = {u for u, _ in bad}
            uids = [u for u in uids if u not in refused]
        return uids

    def removes(self, uids: list[str]) -> list[str]:
        return self._standing(Action.REMOVE, uids)

    def _standing(self, action: Action, uids: list[str]) -> list[str]:
        refused = self.by_action[action]
        if not refused or not uids:
            return uids
        found = [u for u in uids if u in refused]
        if not found:
            return uids
        self.seen.update(found)
        if self.retry:
            return uids
        self.held += len(found)
        self._sample(found)
        kept = set(found)
        return [u for u in uids if u not in kept]

    def _sample(self, uids: list[str]) -> None:
        if len(self.samples) < SAMPLES:
            self.samples.extend(uids[:SAMPLES - len(self.samples)])

    @property
    def count(self) -> int:
        """Uids this plan keeps from MoEngage: standing refusals still asked for, and new local ones."""
        return self.held + len(self.local)

    @property
    def stale(self) -> list[str]:
        """Standing refusals the diff no longer asks for: their presence changed, so they are dropped."""
        return sorted(set(self.standing) - self.seen)

    @property
    def writes(self) -> bool:
        """Whether apply has refusals to write down (new local ones) or drop (stale ones)."""
        return bool(self.local) or bool(self.standing.keys() - self.seen)


def held_back(state: StateStore, plan: CohortPlan, record: CohortRecord | None, retry: bool) -> HeldBack:
    """A cohort's standing refusals (read only when it has any), to hold back from its diff."""
    standing = state.refusals.of(record.id) if record and record.refused else None
    plan.refused_retry = bool(retry and standing)  # then an acceptance clears the refusal
    return HeldBack(standing, retry=retry)
