"""Leases on cohorts, on a shared (PostgreSQL) state: claimed, renewed, handed over, fenced.

Why rows with an expiry and a token (and not row locks or advisory locks) is leases.py's story.
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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from reconciler.common.errors import LeaseHeld, StateError
from reconciler.state.fencing import LOCAL_MARGIN, Fence, db_now
from reconciler.state.leases import (COHORT, DEFAULT_TTL, FORGOTTEN, REPLICA, Holder, LeaseRow, lease_lost, lease_table,
                                     renewing)
from reconciler.state.schema import leases
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)


class CohortLeases:
    """This process's leases on cohorts, on PostgreSQL: claimed, renewed, handed over, fenced.

    Thread-safe: the daemon's lease loop, its worker and its HTTP threads all use it.
    """

    def __init__(self, state: StateStore, role: str, ttl: float = DEFAULT_TTL) -> None:
        self.state, self.ttl = state, ttl
        self.me = Holder(f"{role}-{uuid.uuid4().hex[:8]}", socket.gethostname(), os.getpid(), 0.0)
        self._held: dict[str, Fence] = {}  # sync_key -> the fence of its lease
        self._busy: dict[str, Fence] = {}  # the fences reconciles started under: kept until they finish
        self._lock = threading.Lock()
        self._now = db_now(state.engine.dialect.name)

    @property
    def id(self) -> str:
        return self.me.holder

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def fence(self, key: str) -> Fence:
        """The fence a cohort's writes and sends are made under. A reconcile keeps the one it started
        with, even once the lease is lost (its writes then fail on the token, its sends on the
        deadline); a cohort not held gets a dead fence, never none, so nothing is written unfenced."""
        with self._lock:
            fence = self._busy.get(key) or self._held.get(key)
        return fence or Fence(COHORT + key, self.me.holder, -1, float("-inf"))

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
        """Extend every lease held, in one statement; returns the cohorts lost meanwhile (taken over).

        Only the leases this process still counts as held: one it found lost (a pause past its
        expiry) may still name it in the table, and renewing that row would keep the cohort from
        every other replica while this one no longer reconciles it."""
        started = time.monotonic()
        with self._lock:
            names = [COHORT + key for key in self._held] + [REPLICA + self.id]
        with self._write() as conn:
            rows = conn.execute(leases.update().where(leases.c.holder == self.me.holder, leases.c.name.in_(names))
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
        """Forget a lease found lost (a reconcile under it stops sending at once), and report it once."""
        with self._lock:
            busy = self._busy.get(key)
            if busy is not None and busy.token == token:
                busy.deadline = float("-inf")
            fence = self._held.get(key)
            if fence is None or fence.token != token:
                return  # already reported, or taken again since
            fence.deadline = float("-inf")
            del self._held[key]
        lease_lost(COHORT + key, self.me.holder, why)

    # --- sharing the cohorts ----------------------------------------------------------------
    def live_replicas(self) -> int:
        with self.state.connection() as conn:
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

    def release(self, keys: set[str], busy_too: bool = False) -> list[str]:
        """Give leases back (idle ones, to balance; all of them on shutdown); returns the keys given back.

        A cohort whose reconcile has started keeps its lease until it finishes, unless `busy_too`:
        given back mid-run, another replica would reconcile it beside this one."""
        with self._lock:
            gone = sorted(k for k in keys if k in self._held and (busy_too or k not in self._busy))
            fences = [self._held.pop(k) for k in gone]
            for fence in fences:
                fence.deadline = float("-inf")
        if fences:
            with self._write() as conn:
                for fence in fences:
                    conn.execute(leases.update().where(leases.c.name == fence.name, leases.c.holder == fence.holder,
                                                       leases.c.token == fence.token)
                                 .values(holder="", expires_at=0.0, busy=False))
        return gone

    def close(self) -> None:
        """On a clean exit: every lease back at once, and this replica gone from the count."""
        try:
            self.release(self.held(), busy_too=True)
            with self._write() as conn:
                conn.execute(leases.delete().where(leases.c.name == REPLICA + self.id))
        except StateError as exc:
            log.warning("could not release the leases: %s", exc)

    # --- work on one cohort -----------------------------------------------------------------
    def start(self, key: str) -> bool:
        """Mark the cohort busy before reconciling it (an `apply` then waits); False when the lease is gone."""
        with self._lock:
            fence = self._held.get(key)
        if fence is None or not self._set_busy(fence, key, True):
            return False
        with self._lock:
            self._busy[key] = fence  # pinned: this reconcile's writes stay fenced by it to the end
        return True

    def finish(self, key: str) -> None:
        with self._lock:
            fence = self._busy.pop(key, None)
        if fence is not None and fence.deadline > float("-inf"):
            self._set_busy(fence, key, False)

    def _set_busy(self, fence: Fence, key: str, busy: bool) -> bool:
        with self._write() as conn:
            done = conn.execute(leases.update().where(
                leases.c.name == fence.name, leases.c.holder == fence.holder, leases.c.token == fence.token,
                leases.c.expires_at > self._now).values(busy=busy)).rowcount
        if not done:
            self.lost(key, fence.token, "taken over before its reconcile" if busy else "taken over during its reconcile")
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
                self.release(self.held(), busy_too=True)
                raise LeaseHeld(f"cohort {pending[0][len(COHORT):]} is being reconciled by "
                                f"{holder.describe() if holder else 'another replica'}; try again when it is done")
            if pending:
                time.sleep(0.25)

    def holder_of(self, name: str) -> Holder | None:
        with self.state.connection() as conn:
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
        return self.state.transaction()  # a transaction whose SQLAlchemy errors leave as StateError


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
    with renewing(ttl, cohort_leases.renew, lambda: cohort_leases.release(cohort_leases.held(), busy_too=True)):
        yield cohort_leases
