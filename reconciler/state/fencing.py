"""Fencing: a state write for a cohort commits only while the lease it was made under is still ours.

A replica can lose a cohort's lease without knowing it (paused, partitioned, its clock off); the
next holder then writes that cohort. Every write of a cohort therefore checks, inside its own
transaction, that the lease row still names this holder with the same token and has not expired by
the database's clock, and takes a share lock on that row (`FOR SHARE` on PostgreSQL) so that no
one can take the lease over between the check and the commit. Hosts' clocks decide nothing.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from reconciler.common.errors import LeaseLost

LOCAL_MARGIN = 0.2  # of the lease time: a holder stops sending this long before the database would let it go


def db_now(dialect: str) -> sa.ColumnElement:
    """The database's clock in epoch seconds, as SQL: lease expiry is judged there, never on a host."""
    if dialect == "postgresql":
        return sa.literal_column("EXTRACT(EPOCH FROM clock_timestamp())", sa.Float)
    return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)


@dataclass
class Fence:
    """The lease a cohort's writes are made under: its row's name, the holder, the token it was taken with.

    `deadline` is this process's own cautious view of expiry (monotonic clock, renewed with the
    lease); it only stops *sending* early, since MoEngage cannot check a token. Writes are judged by
    the database alone.
    """

    name: str
    holder: str
    token: int
    deadline: float = float("inf")  # time.monotonic() after which nothing more is sent
    on_lost: Callable[[str], None] | None = field(default=None, repr=False, compare=False)  # told once, with why

    def lost(self, why: str) -> None:
        """The holder found the lease gone while writing or sending: say so where leases are kept."""
        if self.on_lost is not None:
            self.on_lost(why)

    def check_local(self) -> None:
        """Raise LeaseLost when the lease may have expired: called right before a request leaves."""
        if time.monotonic() >= self.deadline:
            raise LeaseLost(self.name, "not renewed in time (paused, or the database unreachable): not sending")


def check(conn: sa.Connection, leases: sa.Table, fence: Fence | None) -> None:
    """Inside a write transaction: the lease is still ours, and stays so until the commit."""
    if fence is None:
        return
    query = sa.select(leases.c.holder).where(
        leases.c.name == fence.name, leases.c.holder == fence.holder, leases.c.token == fence.token,
        leases.c.expires_at > db_now(conn.dialect.name))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)  # FOR SHARE: a takeover waits for this commit
    if conn.execute(query).first() is None:
        raise LeaseLost(fence.name, f"taken over or expired since {fence.holder} took it: nothing written")
