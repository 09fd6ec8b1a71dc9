"""Moving a cohort's members between the local state and a warehouse snapshot, checked, and
keeping its snapshot's mark where the state records it.

A move in loads the snapshot from the local members and checks it, then one local transaction
records where the members are and drops them here; a move out reads the snapshot back into the
local state, checked against its mark inside that transaction, then drops the snapshot. Each
step is made again from the start when a process dies half-way, since the side the state names
stays whole until the last commit. Membership never changes: nothing is re-sent, and pending
batches (uncertain uids) stay as they are, wherever the members go.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from reconciler.common.actions import Action
from reconciler.common.errors import SnapshotError
from reconciler.snapshots.placement import HereMembers, Keeping, Placement, Snapshots
from reconciler.snapshots.snapshot import Location, Snapshot
from reconciler.snapshots.tables import uid_hash
from reconciler.sources.ordering import Spool
from reconciler.state.fencing import Fence
from reconciler.state.records import ChangeNote, Cohort
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)


class Mover:
    """Moves one state's cohorts between the state and warehouse snapshots (the same rules for
    `apply`, the daemon and `cohortsync state move`)."""

    def __init__(self, state: StateStore, snapshots: Snapshots) -> None:
        self.state, self.snapshots = state, snapshots

    def settle(self, cohort: Cohort, placement: Placement | None, keeping: Keeping | None,
               fence: Fence | None = None, run_id: str | None = None) -> Keeping | None:
        """Before anything is sent: the snapshot's one write the state had not recorded, recorded (its
        mark, and its uids in the changelog, as run `run_id` learnt of them), and the members moved to
        where the config wants them (`placement`; None: they stay). Returns where they are kept now."""
        if keeping is not None and keeping.unrecorded is not None:
            write = keeping.unrecorded
            self.state.adopt_snapshot(cohort.key, keeping.mark, Action(write.last_action), write.last_uids,
                                      ChangeNote(run_id, None), fence)
            keeping.unrecorded = None
        if placement is None or not placement.moving:
            return keeping
        if placement.now is not None:
            assert keeping is not None, "a cohort kept in a snapshot is planned with its mark"
            self.move_out(cohort, keeping, fence)
            keeping = None
        if placement.wanted is not None:  # the members are kept here at this point
            keeping = self.move_in(cohort, placement.wanted, HereMembers(self.state, cohort.key).in_order(), fence)
        return keeping

    def move_in(self, cohort: Cohort, location: Location, members: Iterable[list[str]],
                fence: Fence | None = None) -> Keeping:
        """The members (sorted chunks from the local state) into the snapshot at `location`, checked."""
        snapshot = self.snapshots.open(location, cohort.key)
        mark = snapshot.load(members)
        self.state.keep_members_in(cohort, str(location), mark, fence)
        log.info("cohort %s: %d members moved into the warehouse snapshot %s", cohort.key, mark.count, location.shown)
        return Keeping(snapshot, mark)

    def move_out(self, cohort: Cohort, keeping: Keeping, fence: Fence | None = None) -> int:
        """The snapshot's members back into the local state, checked against its mark; then it is dropped."""
        count = self.state.keep_members_here(cohort, checked(keeping.snapshot.chunks(), keeping), fence)
        log.info("cohort %s: %d members moved out of the warehouse snapshot %s into the local state", cohort.key,
                 count, keeping.snapshot.location.shown)
        drop_quietly(keeping.snapshot)
        return count

    def adopt(self, cohort: Cohort, location: Location, fence: Fence | None = None) -> Keeping:
        """Take a snapshot as it stands (restored from a backup, or edited on purpose), which no plan trusts
        any more: its uids are read out, written back with their hashes at new generations, and recorded.
        MoEngage may differ from it: `apply --resync` then makes them agree."""
        snapshot = self.snapshots.open(location, cohort.key)
        spool = Spool()
        try:
            for chunk in snapshot.chunks(checked=False) if snapshot.present() else ():  # a dropped table: empty
                spool.add([u for u in chunk if "\n" not in u])
            mark = snapshot.load(spool.sorted())
        finally:
            spool.close()
        self.state.keep_members_in(cohort, str(location), mark, fence)
        log.warning("cohort %s: the snapshot %s adopted as it stands: %d members", cohort.key, location.shown,
                    mark.count)
        return Keeping(snapshot, mark)


def checked(chunks: Iterable[list[str]], keeping: Keeping) -> Iterator[list[str]]:
    """The chunks as they pass, and at their end a SnapshotError unless they count and sum up to the mark
    (raised inside the transaction that writes them, so nothing of a wrong copy is kept)."""
    count = total = 0
    for chunk in chunks:
        count, total = count + len(chunk), total + sum(map(uid_hash, chunk))
        yield chunk
    if (count, total) != (keeping.mark.count, keeping.mark.checksum):
        raise SnapshotError(f"{keeping.snapshot.location.shown}: {count:,} members read (checksum {total}) where its "
                            f"mark says {keeping.mark.count:,} ({keeping.mark.checksum}): not moved")


def drop_quietly(snapshot: Snapshot) -> None:
    """Drop a snapshot nothing refers to any more; a failure only leaves a table behind (logged)."""
    try:
        snapshot.drop()
    except SnapshotError as exc:
        log.warning("%s; drop it by hand when convenient", exc)
