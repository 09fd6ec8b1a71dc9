"""What a reconcile would do to one cohort, and whether it may: pure decisions, no I/O.

A CohortPlan carries counts, a few sample uids and a verdict. The guards (allow_empty,
max_removals) turn a destructive plan into `blocked` with a reason, unless forced.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from reconciler.common.statuses import Status
from reconciler.settings.model import DEFAULT_WORKSPACE
from reconciler.specs.cohorts import MaxRemovals
from reconciler.state.keys import sync_key
from reconciler.state.records import Cohort

UNCHANGED, CHANGED, BLOCKED, ERROR, SUSPENDED, ORPHANED = (
    Status.UNCHANGED, Status.CHANGED, Status.BLOCKED, Status.ERROR, Status.SUSPENDED, Status.ORPHANED)
SAMPLES = 5  # sample uids shown per action


@dataclass
class CohortPlan:
    """One cohort's plan; `adds`/`removes` are what apply would send."""

    id: str
    name: str
    status: Status
    description: str | None = None
    workspace: str = DEFAULT_WORKSPACE  # where it is synced: the same cohort in two workspaces is two plans
    mode: str = "mirror"
    file: str | None = None
    desired: int | None = None
    synced: int = 0
    adds: int = 0
    removes: int = 0
    requests: int = 0
    unconfirmed: int = 0  # uids of batches whose answer never came; the plan re-sends what settles them
    unconfirmed_since: float | None = None  # when the oldest of those batches was sent
    reason: str | None = None
    forced: bool = False
    sample_adds: list[str] = field(default_factory=list)
    sample_removes: list[str] = field(default_factory=list)
    source_digest: str | None = None
    spec_digest: str | None = None
    desired_digest: str | None = None  # of the desired set, when asked for (saved plans)
    resync: bool = False  # every desired uid re-sent, and the changelog's leavers removed (planning/resync.py)
    refused: int = 0  # uids held back: refused by MoEngage before, or never valid (planning/refusals.py)
    sample_refused: list[str] = field(default_factory=list)
    refused_new: int = 0  # of those, uids refused by this plan's own checks (never valid), not kept before
    refused_retry: bool = False  # --retry-refused: the held-back uids are sent, and an acceptance clears them
    reads: list[str] = field(default_factory=list)  # the dbt models the source reads (unique ids)
    diff: str = "local"  # how it was diffed: "warehouse" (in the warehouse, against its snapshot) or "local"
    moves: str | None = None  # where apply moves its members first: "warehouse" or "local" (none: they stay)
    warehouse_rows: int | None = None  # rows a warehouse diff sent back (the changes, about): None for other diffs

    @property
    def key(self) -> str:
        """The state's name for this cohort in this workspace."""
        return sync_key(self.workspace, self.id)

    @property
    def cohort(self) -> Cohort:
        """The cohort as MoEngage is told of it (the state key, name and description)."""
        return Cohort(self.key, self.name, self.description)

    @property
    def actionable(self) -> bool:
        """Whether apply sends anything for it."""
        return self.status in (CHANGED, ORPHANED) and (self.adds + self.removes) > 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "workspace": self.workspace, "status": self.status, "mode": self.mode,
            "file": self.file, "diff": self.diff,
            "desired": self.desired, "synced": self.synced, "adds": self.adds, "removes": self.removes,
            "requests": self.requests, "unconfirmed": self.unconfirmed, "unconfirmed_since": self.unconfirmed_since,
            "reason": self.reason, "forced": self.forced,
            "sample_adds": self.sample_adds, "sample_removes": self.sample_removes,
            **({"resync": True} if self.resync else {}),  # only when asked for: plans keep their shape
            **({"refused": self.refused, "sample_refused": self.sample_refused} if self.refused else {}),
            **({"reads": self.reads} if self.reads else {}),  # only for a dbt_model source, likewise
            **({"moves": self.moves} if self.moves else {}),  # only while its members are to move
            **({"warehouse_rows": self.warehouse_rows} if self.warehouse_rows is not None else {}),
        }


def fingerprint(plan: CohortPlan) -> str:
    """What a saved plan promises about one cohort: same inputs, same changes."""
    parts = (plan.workspace, str(plan.status), plan.spec_digest, plan.source_digest or plan.desired_digest, plan.synced, plan.adds,
             plan.removes, plan.mode, plan.unconfirmed)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def guard_verdict(
    *, allow_empty: bool, max_removals: MaxRemovals | None, desired: int, synced: int, removes: int
) -> str | None:
    """Why this plan must not run unforced, or None when it may."""
    if desired == 0 and synced > 0 and removes > 0 and not allow_empty:
        return (f"the source yields no uids while {synced} members are synced; "
                "if the cohort really is empty, set guards.allow_empty: true or use --force")
    if max_removals is not None and removes > max_removals.limit(synced):
        return (f"would remove {removes} of {synced} synced members, over max_removals {max_removals} "
                f"(at most {max_removals.limit(synced)}); raise the guard or use --force")
    return None


def verdict(plan: CohortPlan, *, suspended: bool, guard: str | None, force: bool) -> CohortPlan:
    """Set the plan's status from its counts, suspension and guard."""
    if suspended:
        plan.status, plan.reason = SUSPENDED, "suspended: true in the spec"
    elif guard and not force:
        plan.status, plan.reason = BLOCKED, guard
    else:
        plan.status = CHANGED if plan.adds or plan.removes else UNCHANGED
        if guard:
            plan.forced, plan.reason = True, f"forced past a guard: {guard}"
    return plan


def totals(plans: list[CohortPlan]) -> dict[str, int]:
    """Counts per status, and what apply would send (blocked and suspended cohorts send nothing)."""
    out = {"cohorts": len(plans), "adds": 0, "removes": 0, "requests": 0}
    for p in plans:
        out[p.status] = out.get(p.status, 0) + 1
        if p.actionable:
            out["adds"] += p.adds
            out["removes"] += p.removes
            out["requests"] += p.requests
    return out
