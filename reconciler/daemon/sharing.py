"""Which cohorts this daemon may reconcile: all of them (SQLite, one writer), or its share (PostgreSQL).

On PostgreSQL each replica holds the leases of a fair share of the cohorts: ceil(cohorts / live
replicas). It claims free or expired leases up to that share and gives idle ones back above it,
so a replica that joins gets work, and the cohorts of one that died are taken over once their
leases expire. Triggers reach the holder through the lease rows (`CohortLeases.ask`), whichever
replica was asked.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from reconciler.state.fencing import Fence
from reconciler.state.cohortleases import CohortLeases
from reconciler.state.leases import COHORT, REPLICA, Lease, renewing
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass
class Changes:
    """What one look at the leases changed: cohorts claimed (and which of them are new), lost, given back."""

    claimed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)


class SoleWriter:
    """SQLite: the one writer lease, held for the daemon's life; every cohort is this daemon's."""

    shared = False

    def __init__(self, state: StateStore, ttl: float) -> None:
        self.lease, self.ttl = Lease(state, "run", ttl=ttl), ttl

    @property
    def id(self) -> str:
        return self.lease.me.holder

    @contextmanager
    def holding(self) -> Iterator[None]:
        self.lease.acquire()
        with renewing(self.ttl, self.lease.renew, self.lease.release):
            yield

    def mine(self, keys: set[str]) -> set[str]:
        return set(keys)

    def fence(self, key: str) -> Fence | None:
        return None

    def begin(self, key: str) -> bool:
        return True

    def end(self, key: str) -> None:
        pass

    def look(self, keys: set[str], busy: set[str], renew: bool) -> Changes:
        return Changes()

    def asked(self) -> dict[str, str]:
        return {}

    def forward(self, keys: set[str], cohort_ids: list[str], reason: str) -> bool:
        return False  # the daemon queues it itself

    def describe(self, keys: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        me = {"id": self.id, "host": self.lease.me.host, "pid": self.lease.me.pid, "mode": "single writer",
              "cohorts": len(keys)}
        return me, [me], {k: self.id for k in keys}


class Replicas:
    """PostgreSQL: this replica's share of the cohorts, by per-cohort leases."""

    shared = True

    def __init__(self, state: StateStore, ttl: float) -> None:
        self.leases, self.ttl = CohortLeases(state, "run", ttl), ttl

    @property
    def id(self) -> str:
        return self.leases.id

    @contextmanager
    def holding(self) -> Iterator[None]:
        self.leases.register()
        try:
            yield
        finally:
            self.leases.close()

    def mine(self, keys: set[str]) -> set[str]:
        return self.leases.held() & keys

    def fence(self, key: str) -> Fence:
        return self.leases.fence(key)

    def begin(self, key: str) -> bool:
        return self.leases.start(key)

    def end(self, key: str) -> None:
        self.leases.finish(key)

    def look(self, keys: set[str], busy: set[str], renew: bool) -> Changes:
        """Renew (when due), then claim up to this replica's share or give back idle leases above it."""
        changes = Changes()
        if renew:
            changes.lost = self.leases.renew()
        held = self.leases.held()
        gone = sorted((held - keys) - busy)  # cohorts no spec or record names any more
        share = math.ceil(len(keys) / self.leases.live_replicas())
        if len(held) - len(gone) < share:
            changes.claimed = self.leases.claim(keys - held, share - (len(held) - len(gone)))
        elif len(held) - len(gone) > share:
            idle = sorted((held & keys) - busy)
            gone += idle[: len(held) - len(gone) - share]
        if gone:
            changes.released = self.leases.release(set(gone))
        return changes

    def asked(self) -> dict[str, str]:
        return self.leases.asked()

    def forward(self, keys: set[str], cohort_ids: list[str], reason: str) -> bool:
        self.leases.ask(keys, cohort_ids, reason)
        return True

    def describe(self, keys: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        """This replica, every live one with how many cohorts it holds, and each cohort's holder."""
        rows = self.leases.table()
        holders = {r.name[len(COHORT):]: r.holder for r in rows if r.name.startswith(COHORT)}
        counts: dict[str, int] = {}
        for holder in holders.values():
            counts[holder] = counts.get(holder, 0) + 1
        replicas = [{"id": r.holder, "host": r.host, "pid": r.pid, "expires_in": r.expires_in,
                     "cohorts": counts.get(r.holder, 0)} for r in rows if r.name.startswith(REPLICA)]
        me = {"id": self.id, "host": self.leases.me.host, "pid": self.leases.me.pid, "mode": "replica",
              "cohorts": counts.get(self.id, 0)}
        return me, replicas, holders


def sharing_for(state: StateStore, ttl: float) -> SoleWriter | Replicas:
    """PostgreSQL shares the cohorts between replicas; any other state has one writer."""
    return Replicas(state, ttl) if state.shared else SoleWriter(state, ttl)
