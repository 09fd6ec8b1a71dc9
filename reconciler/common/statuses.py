"""Every status a cohort's plan or run can end in, in one enumeration.

Plans, run results, the state's `last_status`, exit codes, logs and metrics all use these, so a
new status is added here once and a misspelt one is a NameError, not a silent success.
Values are the strings users see in output and JSON: keep them.
"""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    # what a plan says of a cohort
    UNCHANGED = "unchanged"  # MoEngage already matches the spec
    CHANGED = "changed"  # adds or removes to send
    BLOCKED = "blocked"  # a guard refused the plan; --force or a spec change goes past it
    ERROR = "error"  # the spec or its source is broken; nothing is sent, nothing removed
    SUSPENDED = "suspended"  # suspended: true in the spec
    ORPHANED = "orphaned"  # in the state, its spec gone
    # what a run did with it
    RUNNING = "running"  # a run row while the run is under way
    CONVERGED = "converged"  # every batch answered 200: MoEngage matches the spec
    PRUNED = "pruned"  # an orphan emptied and forgotten
    FAILED = "failed"  # a batch was refused, or its answer never came (see UNCONFIRMED)
    UNCONFIRMED = "unconfirmed"  # a batch's answer never came: the next plan settles its members
    INTERRUPTED = "interrupted"  # a shutdown stopped it between batches; the next run sends the rest
    STALE = "stale"  # a saved plan no longer matched what it was made from

    def __str__(self) -> str:
        return self.value

    @property
    def ok(self) -> bool:
        """Whether a cohort that ended here needs nobody's attention (exit code 0)."""
        return self in OK


OK = frozenset({Status.UNCHANGED, Status.CHANGED, Status.SUSPENDED, Status.ORPHANED, Status.CONVERGED, Status.PRUNED})
HEALTHY = frozenset({Status.CONVERGED, Status.UNCHANGED, Status.PRUNED})  # nothing to explain: no reason is shown
QUIET = frozenset({Status.UNCHANGED, Status.CONVERGED, Status.SUSPENDED})  # logged at DEBUG when nothing was sent
