"""The state database: per cohort, what MoEngage has, lacks or might have; and the runs.

SQLAlchemy Core on any URL; SQLite (WAL) by default, PostgreSQL for HA. `cs_members` holds the
members MoEngage confirmed. Every batch is written to `cs_batches` as pending before it is sent
and settled when its answer comes (one transaction each): a 200 moves its uids into or out of
`cs_members`, a definite refusal drops it, and a batch whose answer never came (a timeout, a
dropped connection, a crash or SIGKILL mid-flight) stays, so its uids are known to be uncertain
and the next plan re-sends them. Each uid is pending in at most one batch of its cohort: a new
batch takes over the uids it re-sends from older ones in the same transaction. Member uids sort
in code-point order on every backend (binary collation), as the merge diff needs.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.common.actions import Action
from reconciler.common.errors import StateError, short_message
from reconciler.sources.cursors import streaming_cursor
from reconciler.sources.ordering import OutOfOrder, checked
from reconciler.state import changelog as changes, fencing, refused as refusing
from reconciler.state.changelog import Changelog
from reconciler.state.database import Database, decode, encode, make_engine
from reconciler.state.fencing import Fence
from reconciler.state.keys import in_workspace, of_cohort, sync_key
from reconciler.state.refused import Refusals
from reconciler.state.records import ChangeNote, Cohort, CohortRecord, Ending, PendingBatch, RunRecord, SnapshotMark
from reconciler.state.schema import (batches, bump_state_version, cohorts, leases, members, migrate, read_state_id,
                                     read_version, refused, runs)

READ_ROWS = 20_000  # members fetched per round trip
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # DBAPI paramstyle -> positional mark
UNKNOWN = "unknown"  # a pending batch's action once only its taken-over uids remain uncertain


def synced_in_order(store: "StateStore", cohort_id: str) -> Iterator[list[str]]:
    """A cohort's members as the merge diff needs them: strictly ascending, or a StateError."""
    try:
        yield from checked(store.synced_chunks(cohort_id))
    except OutOfOrder as exc:
        raise StateError(f"members of {cohort_id} do not come back in code-point order ({exc}): "
                         "the state database's uid column needs a binary collation") from exc


class StateStore(Database):
    """The only code that reads or writes the state database's members, batches, runs and records."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.changelog = Changelog(self)
        self.refusals = Refusals(self)

    @classmethod
    def open(cls, url: str) -> "StateStore":
        store = cls(make_engine(url))
        store.migrate()
        return store

    # --- schema ------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create the schema, or bring an older one up to this cohortsync's (schema.py)."""
        with self.transaction() as conn:
            migrate(conn)

    def schema_version(self) -> int:
        with self.connection() as conn:
            return read_version(conn, "schema_version")

    def state_id(self) -> str:
        """This state database's own id: the owner its warehouse snapshots are written under."""
        with self.connection() as conn:
            return read_state_id(conn)

    def state_version(self) -> int:
        """Grows with every change to the members: a saved plan is stale once it moved."""
        with self.connection() as conn:
            return read_version(conn, "state_version")

    # --- reads -------------------------------------------------------------------------
    def cohort(self, cohort_id: str) -> CohortRecord | None:
        return self._records(cohorts.c.id == cohort_id).get(cohort_id)

    def cohorts(self) -> dict[str, CohortRecord]:
        return self._records(sa.true())

    def _records(self, where: Any) -> dict[str, CohortRecord]:
        """Cohort rows with their unconfirmed counts (pending batches are disjoint, so a sum is exact)."""
        pending = (sa.select(batches.c.cohort_id, sa.func.sum(batches.c.count), sa.func.min(batches.c.sent_at))
                   .group_by(batches.c.cohort_id))
        with self.connection() as conn:
            rows = conn.execute(sa.select(cohorts).where(where).order_by(cohorts.c.id)).all()
            unconfirmed = {cid: (int(n), since) for cid, n, since in conn.execute(pending)}
            held = dict(conn.execute(sa.select(refused.c.cohort_id, sa.func.count()).group_by(refused.c.cohort_id)).all())
        return {r.id: CohortRecord(**r._mapping, unconfirmed=unconfirmed.get(r.id, (0, None))[0],
                                   unconfirmed_since=unconfirmed.get(r.id, (0, None))[1],
                                   refused=int(held.get(r.id, 0))) for r in rows}

    def pending(self, cohort_id: str) -> list[PendingBatch]:
        """The cohort's batches whose answer never came, oldest first."""
        with self.connection() as conn:
            rows = conn.execute(sa.select(batches).where(batches.c.cohort_id == cohort_id).order_by(batches.c.id)).all()
        return [_pending(r) for r in rows]

    def unconfirmed_uids(self, cohort_id: str) -> list[str]:
        """Every uid MoEngage might have or lack, ascending (held in memory: a batch or so per failed run)."""
        return sorted(u for batch in self.pending(cohort_id) for u in batch.uids)

    def present_among(self, cohort_id: str, uids: list[str]) -> set[str]:
        """Which of these uids the state records as members."""
        found: set[str] = set()
        with self.connection() as conn:
            for i in range(0, len(uids), 500):
                found.update(conn.execute(sa.select(members.c.uid).where(
                    members.c.cohort_id == cohort_id, members.c.uid.in_(uids[i:i + 500]))).scalars())
        return found

    def synced_chunks(self, cohort_id: str) -> Iterator[list[str]]:
        """The acknowledged members, sorted in code-point order, streamed in lists."""
        query = sa.select(members.c.uid).where(members.c.cohort_id == cohort_id).order_by(members.c.uid)
        compiled = query.compile(dialect=self.engine.dialect)
        params: Any = ([compiled.params[k] for k in compiled.positiontup or []] if compiled.positional
                       else compiled.params)
        try:
            raw = self.engine.raw_connection()  # the driver's own cursor: ten million rows without Row objects
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read members of {cohort_id}: {short_message(exc)}") from exc
        driver_error = self.engine.dialect.loaded_dbapi.Error  # every DBAPI driver's own base class
        try:
            cursor = streaming_cursor(raw.driver_connection, self.engine.dialect.name, "cohortsync_members")
            cursor.execute(str(compiled), params)
            while rows := cursor.fetchmany(READ_ROWS):
                yield [row[0] for row in rows]
            cursor.close()
        except driver_error as exc:
            raise StateError(f"cannot read members of {cohort_id}: {short_message(exc)}") from exc
        finally:
            raw.rollback()
            raw.close()

    def count_members(self, cohort_id: str) -> int:
        with self.connection() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(members).where(members.c.cohort_id == cohort_id)).scalar_one())

    def runs(self, cohort_id: str | None = None, limit: int = 20, workspaces: Iterable[str] = ()) -> list[RunRecord]:
        """The latest runs, newest first: of one cohort (in every workspace, or those named), or of all."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        chosen = list(workspaces)
        if cohort_id and chosen:
            query = query.where(runs.c.cohort_id.in_([sync_key(w, cohort_id) for w in chosen]))
        elif cohort_id:
            query = query.where(of_cohort(runs.c.cohort_id, cohort_id))
        elif chosen:
            query = query.where(sa.or_(*[in_workspace(runs.c.cohort_id, w) for w in chosen]))
        with self.connection() as conn:
            rows = conn.execute(query).all()
        return [RunRecord(**{k: v for k, v in r._mapping.items() if k != "id"}) for r in rows]

    def last_changes(self) -> dict[str, RunRecord]:
        """Each cohort's newest run that sent something, in one query: the status page's "last change"."""
        sent = runs.c.sent_adds + runs.c.sent_removes > 0
        newest = sa.select(sa.func.max(runs.c.id)).where(sent).group_by(runs.c.cohort_id).scalar_subquery()
        with self.connection() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.id.in_(newest))).all()
        return {r.cohort_id: RunRecord(**{k: v for k, v in r._mapping.items() if k != "id"}) for r in rows}

    # --- writes ------------------------------------------------------------------------
    def begin_batch(self, cohort: Cohort, action: Action, uids: list[str], run_id: str | None = None, *,
                    take_over: bool = False, fence: Fence | None = None) -> int:
        """Write a batch down as pending before it is sent; returns its id for settling.

        With `take_over` (the plan re-sends uncertain uids), the uids this batch re-sends leave
        the older pending batches in the same transaction: a uid is pending in one batch at most.
        """
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort)
            carried = self._take_over(conn, cohort.key, set(uids)) if take_over else []
            batch_id = conn.execute(batches.insert().values(
                cohort_id=cohort.key, action=str(action), count=len(uids), uids=encode(uids),
                carried=encode(sorted(carried)) if carried else None, run_id=run_id, sent_at=time.time(),
            )).inserted_primary_key[0]
            conn.execute(cohorts.update().where(cohorts.c.id == cohort.key).values(converged=False))
            bump_state_version(conn)
        return int(batch_id)

    def _take_over(self, conn: sa.Connection, cohort_id: str, uids: set[str]) -> list[str]:
        taken: list[str] = []
        for row in conn.execute(sa.select(batches).where(batches.c.cohort_id == cohort_id)).all():
            batch = _pending(row)
            if any(u in uids for u in batch.uids):
                taken.extend(u for u in batch.uids if u in uids)
                _shrink(conn, batch, [u for u in batch.uids if u not in uids])
        return taken

    def settle_batch(self, batch_id: int, cohort_id: str, action: Action, uids: list[str], *,
                     remaining: list[str] | None = None, write_members: bool = True,
                     note: ChangeNote | None = None, fence: Fence | None = None, clear_refused: bool = False,
                     snapshot: SnapshotMark | None = None) -> None:
        """A 200 for `uids` (the whole batch, or one part of a split one): members, the pending
        record and the changelog (with `note`) change together, in one transaction; with a
        `fence`, only while the cohort's lease is still this writer's.

        `write_members` is False for a re-sent batch whose uids the members table already has
        right (a re-add of a member, a re-remove of a non-member): only the pending record goes.
        With `clear_refused` (`apply --retry-refused`), refusals of the accepted uids are dropped.
        A cohort whose members are kept in a warehouse snapshot had them written there first
        (snapshots/): `snapshot` is the mark that write left, recorded here instead of member rows.
        """
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            if clear_refused:
                refusing.clear(conn, cohort_id, uids)
            if note is not None and uids:
                changes.append(conn, cohort_id, action, uids, note)
            if snapshot is not None:
                self._mark(conn, cohort_id, snapshot)
            elif write_members and uids:
                self._write_members(conn, action, [(cohort_id, u) for u in uids])
                conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(
                    synced_count=cohorts.c.synced_count + Action(action).delta(len(uids)), last_run_at=time.time()))
            if remaining:
                row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
                if row is not None:
                    _shrink(conn, _pending(row), remaining)
            else:
                conn.execute(batches.delete().where(batches.c.id == batch_id))
            bump_state_version(conn)

    def _mark(self, conn: sa.Connection, cohort_id: str, mark: SnapshotMark, ran: bool = True) -> None:
        """Record the snapshot's mark; `ran` False for a move, which is no run (`status` keeps its last run)."""
        values = {"synced_count": mark.count, "snapshot_gen": mark.generation, "snapshot_sum": mark.checksum}
        conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(
            **values, **({"last_run_at": time.time()} if ran else {})))

    def adopt_snapshot(self, cohort_id: str, mark: SnapshotMark, action: Action, uids: list[str],
                       note: ChangeNote | None = None, fence: Fence | None = None) -> None:
        """The snapshot was written once more than this state saw (the writer died, or lost its lease,
        between the two commits): take its mark, and log that write's uids (with `note`) as the settle
        would have; they are still pending here, and the next plan re-sends them."""
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            if note is not None and uids:
                changes.append(conn, cohort_id, action, uids, note)
            self._mark(conn, cohort_id, mark)
            bump_state_version(conn)

    def keep_members_in(self, cohort: Cohort, location: str, mark: SnapshotMark, fence: Fence | None = None) -> None:
        """The cohort's members were copied into a warehouse snapshot and checked: keep them only there."""
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort)
            conn.execute(members.delete().where(members.c.cohort_id == cohort.key))
            conn.execute(cohorts.update().where(cohorts.c.id == cohort.key).values(snapshot=location))
            self._mark(conn, cohort.key, mark, ran=False)
            bump_state_version(conn)

    def keep_members_here(self, cohort: Cohort, chunks: Iterable[list[str]], fence: Fence | None = None) -> int:
        """The cohort's members, read back from its warehouse snapshot, kept here again (one transaction)."""
        count = 0
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort)
            conn.execute(members.delete().where(members.c.cohort_id == cohort.key))
            for chunk in chunks:
                self._write_members(conn, Action.ADD, [(cohort.key, u) for u in chunk])
                count += len(chunk)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort.key).values(
                snapshot=None, snapshot_gen=None, snapshot_sum=None, synced_count=count))
            bump_state_version(conn)
        return count

    def refuse_batch(self, batch_id: int, fence: Fence | None = None) -> None:
        """A definite refusal (400, 401, 403, 413, 415, 429): MoEngage did not apply the batch.

        The uids it had taken over from older unanswered batches stay uncertain.
        """
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
            if row is None:
                return
            batch = _pending(row)
            if batch.carried:
                conn.execute(batches.update().where(batches.c.id == batch_id).values(
                    action=UNKNOWN, uids=encode(batch.carried), count=len(batch.carried), carried=None))
            else:
                conn.execute(batches.delete().where(batches.c.id == batch_id))
            bump_state_version(conn)

    def refuse_uids(self, cohort: Cohort, action: Action, found: list[tuple[str, str]],
                    fence: Fence | None = None) -> None:
        """MoEngage refuses these (uid, error) for `action` (a bisected 400): kept, and no longer
        uncertain (MoEngage refuses a request as a whole, so no earlier batch holding them was applied)."""
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort)
            refusing.record(conn, cohort.key, action, found)
            self._take_over(conn, cohort.key, {uid for uid, _ in found})
            bump_state_version(conn)

    def commit_batch(self, cohort: Cohort, action: Action, uids: Iterable[str]) -> None:
        """Record a batch MoEngage acknowledged, with no pending record (state copies, tests, benchmarks)."""
        rows = [(cohort.key, u) for u in uids]
        if not rows:
            return
        with self.transaction() as conn:
            if conn.execute(sa.select(cohorts.c.snapshot).where(cohorts.c.id == cohort.key)).scalar():
                raise StateError(f"cohort {cohort.key}: its members are kept in a warehouse snapshot, not here")
            self._ensure_cohort(conn, cohort)
            self._write_members(conn, action, rows)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort.key).values(
                synced_count=cohorts.c.synced_count + Action(action).delta(len(rows)), converged=False,
                last_run_at=time.time()))
            bump_state_version(conn)

    def _write_members(self, conn: sa.Connection, action: Action, rows: list[tuple[str, str]]) -> None:
        """Insert or delete (cohort_id, uid) rows with the driver's own executemany.

        Through SQLAlchemy's compiled statements each row's parameters are processed in Python,
        about two thirds of a 5,500-uid batch's commit; the driver takes the tuples as they are.
        """
        mark = _PLACEHOLDERS.get(self.engine.dialect.paramstyle)
        if mark is None:  # a paramstyle we do not write by hand: let SQLAlchemy compile it
            statement = (members.insert() if action == Action.ADD else members.delete().where(
                members.c.cohort_id == sa.bindparam("cohort_id"), members.c.uid == sa.bindparam("uid")))
            conn.execute(statement, [{"cohort_id": c, "uid": u} for c, u in rows])
        elif action == Action.ADD:
            conn.exec_driver_sql(f"INSERT INTO cs_members (cohort_id, uid) VALUES ({mark}, {mark})", rows)
        else:
            conn.exec_driver_sql(f"DELETE FROM cs_members WHERE cohort_id = {mark} AND uid = {mark}", rows)

    def record_outcome(self, cohort: Cohort, ending: Ending, fence: Fence | None = None) -> None:
        """The end of a cohort's run: its status, and the digests it converged on."""
        now = time.time()
        values: dict[str, Any] = {"last_run_at": now, "last_status": str(ending.status),
                                  "last_error": ending.error, "converged": ending.converged}
        if ending.converged:
            values.update(spec_digest=ending.spec_digest, source_digest=ending.source_digest,
                          last_success_at=now, name=cohort.name, description=cohort.description)
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort.key).values(**values))

    def record_run(self, run: RunRecord, fence: Fence | None = None) -> None:
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            conn.execute(runs.insert().values(**{**vars(run), "status": str(run.status)}))

    def forget(self, cohort_id: str, fence: Fence | None = None) -> None:
        """Drop an emptied orphan's record once nothing of it remains in MoEngage."""
        with self.transaction() as conn:
            fencing.check(conn, leases, fence)
            conn.execute(members.delete().where(members.c.cohort_id == cohort_id))
            conn.execute(batches.delete().where(batches.c.cohort_id == cohort_id))
            conn.execute(refused.delete().where(refused.c.cohort_id == cohort_id))
            conn.execute(cohorts.delete().where(cohorts.c.id == cohort_id))
            bump_state_version(conn)

    def _ensure_cohort(self, conn: sa.Connection, cohort: Cohort) -> None:
        exists = conn.execute(sa.select(cohorts.c.id).where(cohorts.c.id == cohort.key)).first()
        if not exists:
            conn.execute(cohorts.insert().values(id=cohort.key, name=cohort.name, description=cohort.description,
                                                 synced_count=0, converged=False))

def _pending(row: Any) -> PendingBatch:
    return PendingBatch(row.id, row.cohort_id, row.action, decode(row.uids), decode(row.carried), row.run_id,
                        row.sent_at)

def _shrink(conn: sa.Connection, batch: PendingBatch, keep: list[str]) -> None:
    """Leave only `keep` of a pending batch's uids; drop the batch when none are left."""
    if not keep:
        conn.execute(batches.delete().where(batches.c.id == batch.id))
        return
    kept = set(keep)
    carried = [u for u in batch.carried if u in kept]
    conn.execute(batches.update().where(batches.c.id == batch.id).values(
        uids=encode(keep), count=len(keep), carried=encode(carried) if carried else None))
