"""The single-writer lease: one row in the state database naming who may send and write.

`run` and `apply` both take it, so two writers never interleave batches for the same cohorts.
A holder renews it while it works; a holder that died stops renewing, and once its lease
expires the next writer takes it over.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.common.errors import LeaseHeld, StateError, short_message
from reconciler.state.store import StateStore, leases

log = logging.getLogger(__name__)
WRITER = "writer"
DEFAULT_TTL = 30.0  # seconds a lease lives without renewal


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
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            if not lease.renew():
                log.error("lost the state lease to another writer")

    thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        done.set()
        thread.join(timeout=5)
        lease.release()
