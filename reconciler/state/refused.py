"""Refused uids: what MoEngage answered 400 for, bisected down to the uids it refuses, and what can
never be valid (refused locally). Kept per (workspace, cohort, uid) with the error and since when.

A refused uid is not a member and is not sent again while its refusal stands: the plan holds it
back. The refusal is for one desired presence (the action refused); once the source's row for the
uid changes that (it left, or came back), or `apply --retry-refused` asks, it is tried again.
Writes run inside the caller's transaction (the one that refuses or settles the batch), so a
kill between two lines leaves the refusals and the pending batches in agreement.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

import sqlalchemy as sa

from reconciler.state import fencing
from reconciler.state.database import Database
from reconciler.state.fencing import Fence
from reconciler.state.records import RefusedUid
from reconciler.state.schema import leases, refused

CHUNK = 500  # uids per IN (...) list


def record(conn: sa.Connection, cohort_id: str, presence: str, items: Iterable[tuple[str, str]]) -> int:
    """Inside the caller's transaction: these (uid, error) refused now; an earlier refusal keeps its `since`."""
    found = {digest(uid): (uid, error) for uid, error in items}
    if not found:
        return 0
    now = time.time()
    since = {}
    for part in _chunks(sorted(found)):
        since.update(conn.execute(sa.select(refused.c.digest, refused.c.since).where(
            refused.c.cohort_id == cohort_id, refused.c.digest.in_(part))).all())
        conn.execute(refused.delete().where(refused.c.cohort_id == cohort_id, refused.c.digest.in_(part)))
    conn.execute(refused.insert(), [{"cohort_id": cohort_id, "digest": key, "uid": uid, "presence": str(presence),
                                     "error": error[:2000], "since": since.get(key, now), "at": now}
                                    for key, (uid, error) in sorted(found.items())])
    return len(found)


def clear(conn: sa.Connection, cohort_id: str, uids: Iterable[str]) -> None:
    """Inside the caller's transaction: these uids are refused no more (accepted, or their presence changed)."""
    for part in _chunks(sorted({digest(u) for u in uids})):
        conn.execute(refused.delete().where(refused.c.cohort_id == cohort_id, refused.c.digest.in_(part)))


def digest(uid: str) -> str:
    """A refusal's key: a uid refused for its length may be longer than any index allows."""
    return hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()


class Refusals:
    """Reading refused uids, and the writes a run makes outside a batch's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def of(self, cohort_id: str) -> dict[str, RefusedUid]:
        """One cohort's refused uids (few: a run refuses at most bisecting.MAX_REFUSED more)."""
        return {r.uid: r for r in self.listing([cohort_id])}

    def listing(self, cohort_ids: Iterable[str] | None = None, limit: int | None = None) -> list[RefusedUid]:
        query = sa.select(refused).order_by(refused.c.cohort_id, refused.c.since, refused.c.digest)
        if cohort_ids is not None:
            query = query.where(refused.c.cohort_id.in_(list(cohort_ids)))
        if limit is not None:
            query = query.limit(limit)
        with self.db.connection() as conn:
            rows = conn.execute(query).all()
        return sorted((RefusedUid(r.cohort_id, r.uid, r.presence, r.error, r.since, r.at) for r in rows),
                      key=lambda r: (r.cohort_id, r.uid))

    def counts(self) -> dict[str, int]:
        """Refused uids per cohort key."""
        query = sa.select(refused.c.cohort_id, sa.func.count()).group_by(refused.c.cohort_id)
        with self.db.connection() as conn:
            return {cid: int(n) for cid, n in conn.execute(query)}

    def update(self, cohort_id: str, presence: str, found: Iterable[tuple[str, str]], stale: Iterable[str] = (),
               fence: Fence | None = None) -> None:
        """Uids refused before sending (local checks), and refusals whose presence changed, dropped."""
        found, stale = list(found), list(stale)
        if not found and not stale:
            return
        with self.db.transaction() as conn:
            fencing.check(conn, leases, fence)
            clear(conn, cohort_id, stale)
            record(conn, cohort_id, presence, found)


def _chunks(uids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(uids), CHUNK):
        yield uids[i:i + CHUNK]
