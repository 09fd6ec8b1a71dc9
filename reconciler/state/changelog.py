"""The membership changelog: one row per settled batch, who entered or left a cohort, when and why.

The row is written by the transaction that settles the batch (store.py), so the changelog agrees
with the members exactly. Its uids are one ascending, newline-joined blob per batch, as pending
batches are kept: a row per uid would double the cost of a write. Questions about one uid
(`members UID`) are answered by a bytes search of the blobs: rare, and fast enough unindexed.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from reconciler.common.actions import Action
from reconciler.state.database import Database, decode, encode
from reconciler.state.records import ChangeEntry, ChangeNote
from reconciler.state.schema import changelog, runs


def append(conn: sa.Connection, cohort_id: str, action: str, uids: list[str], note: ChangeNote) -> None:
    """Inside the settling transaction: one entry for these uids (count only, when the note says so)."""
    conn.execute(changelog.insert().values(
        cohort_id=cohort_id, action=str(action), kind=note.kind, run_id=note.run_id, at=time.time(),
        spec_digest=note.spec_digest, count=len(uids), uids=encode(sorted(uids)) if note.with_uids else b""))


class Changelog:
    """Reading the changelog, and pruning it past its retention."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def entries(self, cohort_ids: Iterable[str] | None = None, *, run_id: str | None = None,
                action: str | None = None) -> Iterator[ChangeEntry]:
        """Entries oldest first, streamed (their uid blobs can be large); consume or close it."""
        query = sa.select(changelog).order_by(changelog.c.id)
        if cohort_ids is not None:
            query = query.where(changelog.c.cohort_id.in_(list(cohort_ids)))
        if run_id is not None:
            query = query.where(changelog.c.run_id == run_id)
        if action is not None:
            query = query.where(changelog.c.action == str(action))
        for row in self.db.stream(query):
            yield _entry(row, decode(row.uids))

    def changes_of(self, uid: str, cohort_ids: Iterable[str] | None = None) -> list[ChangeEntry]:
        """The entries that name `uid`, oldest first, found by a bytes search of each blob.

        A rare question (support, audits): the blobs are read, not indexed, so that writing the
        changelog costs one row per batch and not one per uid. The `uids` of each entry found is
        [uid] only; count-only entries (a resync's re-adds) are not searched.
        """
        needle = b"\n" + uid.encode("utf-8") + b"\n"
        query = sa.select(changelog).where(changelog.c.uids != b"").order_by(changelog.c.id)
        if cohort_ids is not None:
            query = query.where(changelog.c.cohort_id.in_(list(cohort_ids)))
        return [_entry(row, [uid]) for row in self.db.stream(query) if needle in b"\n" + bytes(row.uids) + b"\n"]

    def resyncs(self, cohort_ids: Iterable[str]) -> list[ChangeEntry]:
        """Count-only resync entries (re-adds of every member) of these cohorts, oldest first."""
        query = sa.select(changelog).where(changelog.c.uids == b"", changelog.c.cohort_id.in_(list(cohort_ids)))
        with self.db.connection() as conn:
            return [_entry(row, []) for row in conn.execute(query.order_by(changelog.c.id))]

    def leavers(self, cohort_id: str) -> Iterator[list[str]]:
        """Every uid the changelog says was removed from the cohort, a batch at a time (not in order overall)."""
        query = sa.select(changelog.c.uids).where(changelog.c.cohort_id == cohort_id,
                                                  changelog.c.action == str(Action.REMOVE), changelog.c.uids != b"")
        for row in self.db.stream(query):
            yield decode(row.uids)

    def prune(self, before: float, limit: int = 500) -> int:
        """Delete at most `limit` entries older than `before`; the daemon calls it in small steps."""
        with self.db.transaction() as conn:
            ids = conn.execute(sa.select(changelog.c.id).where(changelog.c.at < before)
                               .order_by(changelog.c.id).limit(limit)).scalars().all()
            if ids:
                conn.execute(changelog.delete().where(changelog.c.id.in_(ids)))
        return len(ids)

    def last_resyncs(self) -> dict[str, float]:
        """When each cohort's last resync run started (runs whose trigger is `resync`)."""
        query = (sa.select(runs.c.cohort_id, sa.func.max(runs.c.started_at)).where(runs.c.trigger == "resync")
                 .group_by(runs.c.cohort_id))
        with self.db.connection() as conn:
            return {cid: at for cid, at in conn.execute(query)}


def _entry(row: Any, uids: list[str]) -> ChangeEntry:
    return ChangeEntry(row.id, row.cohort_id, row.action, row.kind, row.run_id, row.at, row.spec_digest, row.count,
                       uids)
