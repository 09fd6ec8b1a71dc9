"""`cohortsync state check` for the members kept in warehouse snapshots: each snapshot against the
mark the state keeps of it (owner, generation, rows and checksum), as a plan checks it before a diff;
and, in each snapshots schema of the config, the snapshots of this state that no cohort refers to
any more (a prune whose drop failed, a move that stopped half-way): safe to drop."""
from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from reconciler.common.errors import StateError
from reconciler.snapshots.placement import Snapshots
from reconciler.snapshots.snapshot import Location
from reconciler.snapshots.tables import marks_table


@dataclass
class SnapshotCheck:
    problems: list[str] = field(default_factory=list)  # snapshots no plan would trust
    notes: list[str] = field(default_factory=list)  # worth knowing, no fault


def check_snapshots(snapshots: Snapshots) -> SnapshotCheck:
    check = SnapshotCheck()
    records = snapshots.state.cohorts()
    for key, record in sorted(records.items()):
        if not record.snapshot:
            continue
        try:
            keeping = snapshots.keeping(record)
        except StateError as exc:
            check.problems.append(f"cohort {key}: {exc}")
            continue
        if keeping is not None and keeping.unrecorded is not None:
            check.notes.append(f"cohort {key}: its snapshot is one write ahead of the state (a writer died between "
                               "the two commits): the next apply records it")
    check.notes += _left_behind(snapshots, {r.snapshot for r in records.values() if r.snapshot})
    return check


def _left_behind(snapshots: Snapshots, in_use: set[str | None]) -> list[str]:
    """Marks of this state, in the config's snapshots schemas, that no cohort's record names."""
    notes = []
    state_id = snapshots.state.state_id()
    for name, connection in sorted(snapshots.engines.connections.items()):
        if connection.snapshots is None:
            continue
        marks = marks_table(connection.snapshots)
        try:
            engine = snapshots.engines.get(name)
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(marks.name, schema=connection.snapshots):
                    continue
                rows = conn.execute(sa.select(marks.c.key, marks.c.table_name).where(marks.c.state_id == state_id)).all()
        except (sa.exc.SQLAlchemyError, StateError) as exc:
            notes.append(f"connection {name!r}: its snapshots schema could not be listed ({type(exc).__name__})")
            continue
        for key, table in rows:
            location = Location(name, connection.snapshots, table)
            if str(location) not in in_use:
                notes.append(f"{location.shown} (cohort {key}) is no cohort's snapshot any more: safe to drop, with "
                             "its row in cohortsync_snapshots")
    return notes
