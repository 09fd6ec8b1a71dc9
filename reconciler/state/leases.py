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

The writer lease, the renewal loop, the report of a lost lease and the table `status` shows live
here; the per-cohort leases of replicas in cohortleases.py.
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

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.common.errors import LeaseHeld, StateError, short_message
from reconciler.state.fencing import db_now
from reconciler.state.schema import leases
from reconciler.state.store import StateStore

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


def lease_table(state: StateStore) -> list[LeaseRow]:
    """The leases as `status` shows them, without holding any."""
    now = db_now(state.engine.dialect.name)
    with state.connection() as conn:
        rows = conn.execute(sa.select(leases.c.name, leases.c.holder, leases.c.host, leases.c.pid,
                                      (leases.c.expires_at - now).label("left"), leases.c.busy)
                            .where(leases.c.holder != "", leases.c.expires_at > now).order_by(leases.c.name)).all()
    return [LeaseRow(r.name, r.holder, r.host, r.pid, round(float(r.left), 1), bool(r.busy)) for r in rows]
