"""Leases in the state database: who may send and write, for all cohorts (SQLite) or for each (PostgreSQL).

On SQLite, `run` and `apply` take the one "writer" lease, so two writers never interleave batches.
On PostgreSQL, any number of `run` replicas share the cohorts through one lease row per cohort
(`CohortLeases`). Why rows with an expiry and a token, and not row locks held by an open
transaction (`FOR UPDATE SKIP LOCKED` for the whole reconcile) or advisory locks: both of those
live as long as the holder's session, and a paused or partitioned replica keeps its session (and
its locks) until TCP gives up, minutes later, so nobody could take its cohorts over; and neither
gives a token to fence a late write with. A lease row expires by the database's clock whatever
happens to its holder, its token grows with every new holder, and every state write checks it
(fencing.py). Row locks still do the claiming: a replica picks free rows with
`FOR UPDATE SKIP LOCKED`, so replicas claiming at once never wait on each other.

A holder renews all its leases in one statement every third of the lease time; a holder that died
stops renewing and its cohorts are taken over once they expire. Replicas register themselves as
rows too (`replica:ID`), so each knows how many are alive and takes a fair share of the cohorts.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.common.errors import LeaseHeld, StateError, short_message
from reconciler.state.fencing import LOCAL_MARGIN, Fence, db_now
from reconciler.state.store import StateStore, leases

log = logging.getLogger(__name__)
WRITER = "writer"
DEFAULT_TTL = 30.0  # seconds a lease lives without renewal
COHORT = "cohort:"  # a cohort's lease: "cohort:" + its sync_key
REPLICA = "replica:"  # a running replica's presence
FORGOTTEN = 3600.0  # seconds after which a dead replica's row is deleted by the next one to start


@dataclass(frozen=True)
class Holder:
    holder: str
    host: str
    pid: int
    expires_at: float

    def describe(self) -> str:
        left = max(0.0, self.expires_at - time.time())
        return f"{self.holder} (pid {self.pid} on {self.host}, expires in {left:.0f}s unless renewed)"


class Lease:
    def __init__(self, state: StateStore, role: str, name: str = WRITER, ttl: float = DEFAULT_TTL) -> None:
        self.state, self.name, self.ttl = state, name, ttl
        self.me = Holder(f"{role}-{uuid.uuid4().hex[:8]}", socket.gethostname(), os.getpid(), 0.0)

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming the live holder."""
        now = time.time()
        try:
            with self.state.engine.begin() as conn:
                taken = conn.execute(
                    leases.update()
                    .where(leases.c.name == self.name, sa.or_(leases.c.expires_at < now, leases.c.holder == self.me.holder))
                    .values(holder=self.me.holder, host=self.me.host, pid=self.me.pid, expires_at=now + self.ttl)
                ).rowcount
                if not taken:
                    self._take_over(conn, now)
        except IntegrityError as exc:  # two writers inserted at once: the other won
            raise LeaseHeld("another writer took the state lease at the same moment") from exc
        except SQLAlchemyError as exc:
            raise StateError(f"state database: {short_message(exc)}") from exc

    def _take_over(self, conn: sa.Connection, now: float) -> None:
        """No live lease of ours: insert one, or take a dead local holder's, or name the holder."""
        mine = {"holder": self.me.holder, "host": self.me.host, "pid": self.me.pid, "expires_at": now + self.ttl}
        row = conn.execute(sa.select(leases).where(leases.c.name == self.name)).first()
        if row is None:
            conn.execute(leases.insert().values(name=self.name, **mine))
            return
        if self._dead_here(row):
            log.warning("taking over the state lease of %s (pid %d on this host is gone)", row.holder, row.pid)
            if conn.execute(leases.update().where(leases.c.name == self.name, leases.c.holder == row.holder)
                            .values(**mine)).rowcount:
                return
        holder = Holder(row.holder, row.host, row.pid, row.expires_at)
        if self.me.holder.startswith("run-") and row.holder.startswith("run-"):
            raise LeaseHeld(f"another `cohortsync run` already writes this SQLite state: {holder.describe()}. "
                            "SQLite allows one writer: stop that one, or move the state to PostgreSQL "
                            "(state_url) to run several replicas")
        raise LeaseHeld(f"another writer holds the state lease: {holder.describe()}; wait for it to finish, or stop it")

    def _dead_here(self, row: sa.Row) -> bool:
        """A holder on this very host whose process is gone need not be waited out."""
        if row.host != self.me.host or row.pid == self.me.pid:
            return False
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired and taken over)."""
        try:
            with self.state.engine.begin() as conn:
                return bool(conn.execute(
                    leases.update().where(leases.c.name == self.name, leases.c.holder == self.me.holder)
                    .values(expires_at=time.time() + self.ttl)).rowcount)
        except SQLAlchemyError as exc:
            log.warning("could not renew the state lease: %s", short_message(exc))
            return True  # keep working; the next renewal may succeed before expiry

    def release(self) -> None:
        try:
            with self.state.engine.begin() as conn:
                conn.execute(leases.delete().where(leases.c.name == self.name, leases.c.holder == self.me.holder))
        except SQLAlchemyError as exc:
            log.warning("could not release the state lease: %s", short_message(exc))


@contextmanager
def held(state: StateStore, role: str, ttl: float = DEFAULT_TTL) -> Iterator[Lease]:
    """Hold the writer lease for the block, renewing it in the background."""
    lease = Lease(state, role, ttl=ttl)
    lease.acquire()
    with renewing(ttl, lease.renew, lease.release):
        yield lease


@contextmanager
def renewing(ttl: float, renew: Callable[[], object], release: Callable[[], None]) -> Iterator[None]:
    """Renew a lease every third of its life while in the block (a thread of its own), release it at the end.

    `renew` answers False when the lease went to another writer; a StateError from it is logged
    and the next renewal may still succeed before the lease expires."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(ttl / 3):
            try:
                if renew() is False:
                    log.error("lost the state lease to another writer")
            except StateError as exc:
                log.warning("could not renew the leases: %s", exc)

    thread = threading.Thread(target=loop, name="lease-renewal", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
        release()


LostListener = Callable[[str, str, str], None]  # (lease name, holder, why)
_listeners: list[LostListener] = []  # who hears of a lost lease: the daemon's alerts; see listening_for_lost


def lease_lost(name: str, holder: str, why: str) -> None:
    """The one place a lost lease is reported: logged, then told to whoever listens (alerts).

    A listener's failure never reaches the write that found the lease gone."""
    log.warning("lease_lost: %s no longer held by %s: %s", name, holder, why)
    for listener in list(_listeners):
        try:
            listener(name, holder, why)
        except Exception as exc:  # an alert that fails must not turn into a state error
            log.error("lease_lost listener failed: %s", exc)


@contextmanager
def listening_for_lost(listener: LostListener) -> Iterator[None]:
    """Hear of every lost lease while in the block. The losses are found deep in state writes
    (fencing) and in the lease keeper; a listener list spares threading a callback through each."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@dataclass(frozen=True)
class LeaseRow:
    """A lease as /status and `status` show it."""

    name: str
    holder: str
    host: str
    pid: int
    expires_in: float  # seconds by the database's clock; <= 0: expired
    busy: bool


class CohortLeases:
    """This process's leases on cohorts, on PostgreSQL: claimed, renewed, handed over, fenced.

    Thread-safe: the daemon's lease loop, its worker and its HTTP threads all use it.
    """

    def __init__(self, state: StateStore, role: str, ttl: float = DEFAULT_TTL) -> None:
        self.state, self.ttl = state, ttl
        self.me = Holder(f"{role}-{uuid.uuid4().hex[:8]}", socket.gethostname(), os.getpid(), 0.0)
        self._held: dict[str, Fence] = {}  # sync_key -> the fence of its lease
        self._lock = threading.Lock()
        self._now = db_now(state.engine.dialect.name)

    @property
    def id(self) -> str:
        return self.me.holder

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def fence(self, key: str) -> Fence | None:
        with self._lock:
            return self._held.get(key)

    def _mine(self) -> dict:
        return {"holder": self.me.holder, "host": self.me.host, "pid": self.me.pid,
                "expires_at": self._now + self.ttl}

    def _fence(self, key: str, token: int, started: float) -> Fence:
        return Fence(COHORT + key, self.me.holder, token, started + self.ttl * (1 - LOCAL_MARGIN),
                     on_lost=lambda why, key=key, token=token: self.lost(key, token, why))

    # --- presence and renewal ---------------------------------------------------------------
    def register(self) -> None:
        """Say this replica is alive: a row of its own, renewed with its leases."""
        with self._write() as conn:
            conn.execute(leases.delete().where(sa.or_(  # and forget replicas that died long ago
                leases.c.name == REPLICA + self.id,
                sa.and_(leases.c.name.like(REPLICA + "%"), leases.c.expires_at < self._now - FORGOTTEN))))
            conn.execute(leases.insert().values(name=REPLICA + self.id, token=0, busy=False, **self._mine()))

    def renew(self) -> list[str]:
        """Extend every lease held, in one statement; returns the cohorts lost meanwhile (taken over)."""
        started = time.monotonic()
        with self._write() as conn:
            rows = conn.execute(leases.update().where(leases.c.holder == self.me.holder)
                                .values(expires_at=self._now + self.ttl)
                                .returning(leases.c.name, leases.c.token)).all()
        tokens = dict(rows)
        if REPLICA + self.id not in tokens:
            self.register()
        lost = []
        with self._lock:
            for key, fence in list(self._held.items()):
                if tokens.get(COHORT + key) == fence.token:
                    fence.deadline = started + self.ttl * (1 - LOCAL_MARGIN)
                else:
                    lost.append(key)
        for key in lost:
            self.lost(key, self._held[key].token if key in self._held else -1, "another holder (a replica or an apply) has it now")
        return lost

    def lost(self, key: str, token: int, why: str) -> None:
        """Forget a lease found lost, and report it once."""
        with self._lock:
            fence = self._held.get(key)
            if fence is None or fence.token != token:
                return  # already reported, or taken again since
            del self._held[key]
        lease_lost(COHORT + key, self.me.holder, why)

    # --- sharing the cohorts ----------------------------------------------------------------
    def live_replicas(self) -> int:
        with self.state._connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(leases).where(
                leases.c.name.like(REPLICA + "%"), leases.c.expires_at > self._now)).scalar_one()) or 1

    def claim(self, keys: set[str], want: int) -> list[str]:
        """Take up to `want` free or expired leases among `keys` (rows for new keys are made); returns the keys."""
        if want <= 0 or not keys:
            return []
        names = sorted(COHORT + k for k in keys)
        started = time.monotonic()
        with self._write() as conn:
            known = set(conn.execute(sa.select(leases.c.name).where(leases.c.name.like(COHORT + "%"))).scalars())
            new = [n for n in names if n not in known]
            if new:
                conn.execute(_insert_missing(conn), [{"name": n, "holder": "", "host": "", "pid": 0,
                                                       "expires_at": 0.0, "token": 0, "busy": False} for n in new])
            free = (sa.select(leases.c.name).where(
                leases.c.name.in_(names), sa.or_(leases.c.holder == "", leases.c.expires_at < self._now))
                .order_by(sa.func.md5(leases.c.name + self.id)).limit(want).with_for_update(skip_locked=True))
            rows = conn.execute(leases.update().where(leases.c.name.in_(free.scalar_subquery()))
                                .values(token=leases.c.token + 1, busy=False, **self._mine())
                                .returning(leases.c.name, leases.c.token)).all()
        taken = []
        with self._lock:
            for name, token in rows:
                key = name[len(COHORT):]
                self._held[key] = self._fence(key, token, started)
                taken.append(key)
        return sorted(taken)

    def release(self, keys: set[str]) -> None:
        """Give leases back (idle ones, to balance; all of them on shutdown)."""
        with self._lock:
            fences = [self._held.pop(k) for k in keys if k in self._held]
        if not fences:
            return
        with self._write() as conn:
            for fence in fences:
                conn.execute(leases.update().where(leases.c.name == fence.name, leases.c.holder == fence.holder,
                                                   leases.c.token == fence.token)
                             .values(holder="", expires_at=0.0, busy=False))

    def close(self) -> None:
        """On a clean exit: every lease back at once, and this replica gone from the count."""
        try:
            self.release(self.held())
            with self._write() as conn:
                conn.execute(leases.delete().where(leases.c.name == REPLICA + self.id))
        except StateError as exc:
            log.warning("could not release the leases: %s", exc)

    # --- work on one cohort -----------------------------------------------------------------
    def start(self, key: str) -> bool:
        """Mark the cohort busy before reconciling it (an `apply` then waits); False when the lease is gone."""
        return self._set_busy(key, True)

    def finish(self, key: str) -> None:
        self._set_busy(key, False)

    def _set_busy(self, key: str, busy: bool) -> bool:
        fence = self.fence(key)
        if fence is None:
            return False
        with self._write() as conn:
            done = conn.execute(leases.update().where(
                leases.c.name == fence.name, leases.c.holder == fence.holder, leases.c.token == fence.token,
                leases.c.expires_at > self._now).values(busy=busy)).rowcount
        if not done:
            self.lost(key, fence.token, "taken over before its reconcile")
        return bool(done)

    def take(self, keys: set[str], wait: float = 10.0) -> None:
        """For `apply`: take each cohort's lease, from its holder too when that one is idle; waits up to
        `wait` seconds for a busy one, then gives back what it took and raises LeaseHeld naming the holder."""
        names = sorted(COHORT + k for k in keys)
        deadline = time.monotonic() + wait
        pending = list(names)
        while pending:
            started = time.monotonic()
            with self._write() as conn:
                conn.execute(_insert_missing(conn), [{"name": n, "holder": "", "host": "", "pid": 0,
                                                       "expires_at": 0.0, "token": 0, "busy": False} for n in pending])
                rows = conn.execute(leases.update().where(
                    leases.c.name.in_(pending),
                    sa.or_(leases.c.holder == "", leases.c.expires_at < self._now, leases.c.busy.is_(False)))
                    .values(token=leases.c.token + 1, busy=True, **self._mine())
                    .returning(leases.c.name, leases.c.token)).all()
            with self._lock:
                for name, token in rows:
                    self._held[name[len(COHORT):]] = self._fence(name[len(COHORT):], token, started)
            pending = [n for n in pending if n not in {name for name, _ in rows}]
            if pending and time.monotonic() > deadline:
                holder = self.holder_of(pending[0])
                self.release(self.held())
                raise LeaseHeld(f"cohort {pending[0][len(COHORT):]} is being reconciled by "
                                f"{holder.describe() if holder else 'another replica'}; try again when it is done")
            if pending:
                time.sleep(0.25)

    def holder_of(self, name: str) -> Holder | None:
        with self.state._connect() as conn:
            row = conn.execute(sa.select(leases.c.holder, leases.c.host, leases.c.pid,
                                         (leases.c.expires_at - self._now + sa.literal(time.time())).label("at"))
                               .where(leases.c.name == name)).first()
        return Holder(row.holder, row.host, row.pid, row.at) if row and row.holder else None

    # --- triggers that reach the holder -----------------------------------------------------
    def ask(self, keys: set[str] | None, cohort_ids: list[str], reason: str) -> None:
        """Ask the holders of these cohorts (every cohort when `keys` and `cohort_ids` are empty) to reconcile them."""
        where = [leases.c.name.like(COHORT + "%")]
        if keys or cohort_ids:
            names = [COHORT + k for k in keys or ()]
            where = [sa.or_(leases.c.name.in_(names), *[
                sa.or_(leases.c.name == COHORT + cid, leases.c.name.like(f"{COHORT}%:{cid}")) for cid in cohort_ids])]
        with self._write() as conn:
            conn.execute(leases.update().where(*where).values(wanted=reason))

    def asked(self) -> dict[str, str]:
        """The cohorts someone asked this replica to reconcile, with why; each ask is taken once."""
        with self._write() as conn:
            rows = conn.execute(sa.select(leases.c.name, leases.c.wanted).where(
                leases.c.holder == self.me.holder, leases.c.wanted.is_not(None)).with_for_update()).all()
            if rows:
                conn.execute(leases.update().where(leases.c.name.in_([r.name for r in rows])).values(wanted=None))
        return {name[len(COHORT):]: wanted for name, wanted in rows if name.startswith(COHORT)}

    # --- what /status shows -----------------------------------------------------------------
    def table(self) -> list[LeaseRow]:
        return lease_table(self.state)

    def _write(self) -> Any:
        return self.state._begin()  # a transaction whose SQLAlchemy errors leave as StateError


def _insert_missing(conn: sa.Connection) -> sa.Insert:
    """INSERT that leaves a row another process made meanwhile as it is."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        return insert(leases).on_conflict_do_nothing(index_elements=["name"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(leases).on_conflict_do_nothing(index_elements=["name"])


@contextmanager
def held_cohorts(state: StateStore, role: str, keys: set[str], ttl: float = DEFAULT_TTL) -> Iterator[CohortLeases]:
    """`apply` beside running replicas (PostgreSQL): the leases of the cohorts it touches, renewed in the
    background, given back at the end; LeaseHeld naming the holder of one it cannot take."""
    cohort_leases = CohortLeases(state, role, ttl)
    cohort_leases.take(keys)
    with renewing(ttl, cohort_leases.renew, lambda: cohort_leases.release(cohort_leases.held())):
        yield cohort_leases


def lease_table(state: StateStore) -> list[LeaseRow]:
    """The leases as `status` shows them, without holding any."""
    now = db_now(state.engine.dialect.name)
    with state._connect() as conn:
        rows = conn.execute(sa.select(leases.c.name, leases.c.holder, leases.c.host, leases.c.pid,
                                      (leases.c.expires_at - now).label("left"), leases.c.busy)
                            .where(leases.c.holder != "", leases.c.expires_at > now).order_by(leases.c.name)).all()
    return [LeaseRow(r.name, r.holder, r.host, r.pid, round(float(r.left), 1), bool(r.busy)) for r in rows]
