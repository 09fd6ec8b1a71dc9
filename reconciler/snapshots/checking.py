"""`cohortsync state check` for the members kept in warehouse snapshots: each snapshot against the
mark the state keeps of it (owner, generation, rows and checksum), as a plan checks it before a diff."""
from __future__ import annotations

from reconciler.common.errors import StateError
from reconciler.snapshots.placement import Snapshots


def check_snapshots(snapshots: Snapshots) -> list[str]:
    """Every cohort whose snapshot cannot be trusted, one sentence each; empty when all can."""
    problems = []
    for key, record in sorted(snapshots.state.cohorts().items()):
        if not record.snapshot:
            continue
        try:
            keeping = snapshots.keeping(record)
        except StateError as exc:
            problems.append(f"cohort {key}: {exc}")
            continue
        if keeping is not None and keeping.unrecorded is not None:
            problems.append(f"cohort {key}: its snapshot is one write ahead of the state (a writer died between the "
                            "two commits); the next apply records it: not a fault")
    return problems
