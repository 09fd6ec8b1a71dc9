"""One rate budget per MoEngage account, shared by every process on the same PostgreSQL state.

MoEngage counts requests in a sliding window per account; several replicas and `apply` runs each
with a limiter of their own would together exceed it. The window's N places are N rows of
`cs_rate_slots`. A request takes a place whose last answer came at least one window ago (the row
picked with `FOR UPDATE SKIP LOCKED`, so senders never wait on each other's row), and stamps it,
by the database's clock, when its answer arrives.

Why stamped at the answer, and not pyrate-limiter's PostgreSQL bucket: that bucket records a
request when it is let through, before it leaves. A request slowed on its way then reaches
MoEngage later than recorded, and the next window's requests, let through a window after the
record, can land in the same window on MoEngage's side beside it: a 429. The answer is the
moment MoEngage is known to have counted the request, so a place reused a window after that can
never make N+1 in any window, whatever the latency; its cost is one round trip per window, under
1% at 300/60s. A place whose holder died in flight is reused once `flight` seconds (the request
timeout and a margin) and a window have passed since it was taken.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from reconciler.common.waiting import pause
from reconciler.settings.model import RateLimit
from reconciler.state.fencing import db_now
from reconciler.state.schema import rate_slots
from reconciler.state.store import StateStore

MARGIN = 0.005  # seconds added to the window against clock granularity
LONGEST_WAIT = 1.0  # seconds between looks while every place is in flight elsewhere


class SharedBudget:
    """The client's limiter (`slot()`, `in_use()`, `waits`) with its places in the state database."""

    def __init__(self, state: StateStore, account: str, limit: RateLimit, *, flight: float = 60.0,
                 stop: threading.Event | None = None) -> None:
        self.state, self.account, self.limit, self.flight, self._stop = state, account[:255], limit, flight, stop
        self._now = db_now(state.engine.dialect.name)
        self.waits = 0
        self._ready = False

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the account's N places for a request; stamp it when the answer came (or the request failed)."""
        place, taken = self._acquire()
        try:
            yield
        finally:
            with self.state.transaction() as conn:
                conn.execute(rate_slots.update().where(
                    rate_slots.c.account == self.account, rate_slots.c.slot == place,
                    rate_slots.c.taken_at == taken, rate_slots.c.stamp.is_(None)).values(stamp=self._now))

    def in_use(self) -> int:
        """Places taken in the current window by every process, requests in flight included."""
        c = rate_slots.c
        with self.state.connection() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(rate_slots).where(
                c.account == self.account, c.slot < self.limit.requests,
                sa.or_(c.stamp > self._now - self.limit.window,
                       sa.and_(c.stamp.is_(None), c.taken_at > self._now - self.flight)))).scalar_one())

    def _acquire(self) -> tuple[int, float]:
        self._prepare()
        waited = False
        while True:
            got, delay = self._try()
            if got is not None:
                if waited:
                    self.waits += 1
                return got
            waited = True
            pause(min(max(delay, 0.002), LONGEST_WAIT), self._stop)

    def _try(self) -> tuple[tuple[int, float] | None, float]:
        """A free place (marked in flight), or how long until the soonest one frees."""
        c, window = rate_slots.c, self.limit.window + MARGIN
        free = sa.or_(c.stamp <= self._now - window,
                      sa.and_(c.stamp.is_(None), c.taken_at <= self._now - self.flight - window))
        with self.state.transaction() as conn:
            row = conn.execute(sa.select(c.slot).where(c.account == self.account, c.slot < self.limit.requests, free)
                               .order_by(c.stamp).limit(1).with_for_update(skip_locked=True)).first()
            if row is not None:
                taken = conn.execute(rate_slots.update().where(c.account == self.account, c.slot == row.slot)
                                     .values(stamp=None, taken_at=self._now).returning(c.taken_at)).scalar_one()
                return (row.slot, taken), 0.0
            soonest = conn.execute(sa.select(sa.func.min(c.stamp) + window - self._now).where(
                c.account == self.account, c.slot < self.limit.requests)).scalar()
        return None, LONGEST_WAIT if soonest is None else float(soonest)

    def _prepare(self) -> None:
        """The account's N rows, made once by whichever process comes first (more when the limit grew)."""
        if self._ready:
            return
        with self.state.transaction() as conn:
            have = set(conn.execute(sa.select(rate_slots.c.slot).where(rate_slots.c.account == self.account)).scalars())
            missing = [{"account": self.account, "slot": i, "stamp": 0.0, "taken_at": None}
                       for i in range(self.limit.requests) if i not in have]
            if missing:
                from sqlalchemy.dialects.postgresql import insert
                conn.execute(insert(rate_slots).on_conflict_do_nothing(), missing)
        self._ready = True
