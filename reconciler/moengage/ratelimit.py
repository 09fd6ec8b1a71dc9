"""A client-side sliding-window limiter: at most N requests in any window of S seconds.

Each request's slot is stamped when its answer arrives, not when it leaves: the server saw the
request no later than that, so waiting S seconds from the stamp can never look like N+1 requests
in one window to a sliding-window server, whatever the latency. Bursts of N go out at once.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reconciler.common.waiting import pause
from reconciler.settings.model import RateLimit

_IN_FLIGHT = float("inf")
MARGIN = 0.005  # seconds added to the window against clock granularity


class SlidingWindowLimiter:
    """Thread-safe; one per process and account, shared by every cohort."""

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.limit = limit
        self._clock, self._sleep, self._stop = clock, sleep, stop
        self._stamps: deque[list[float]] = deque()
        self._lock = threading.Lock()
        self.waits = 0  # times a request had to wait for the window

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the N places for the duration of a request."""
        stamp = self._acquire()
        try:
            yield
        finally:
            with self._lock:
                stamp[0] = self._clock()

    def in_use(self) -> int:
        """Places taken in the current window, requests in flight included: the budget shown on /status."""
        with self._lock:
            horizon = self._clock() - self.limit.window - MARGIN
            return sum(1 for s in self._stamps if s[0] > horizon)

    def _acquire(self) -> list[float]:
        waited = False
        while True:
            with self._lock:
                delay = self._delay_locked()
                if delay <= 0:
                    stamp = [_IN_FLIGHT]
                    self._stamps.append(stamp)
                    if waited:
                        self.waits += 1
                    return stamp
            waited = True
            pause(delay, self._stop, self._sleep)

    def _delay_locked(self) -> float:
        now = self._clock()
        horizon = now - self.limit.window - MARGIN
        if self._stamps and self._stamps[0][0] <= horizon or len(self._stamps) >= self.limit.requests:
            # completions can land out of order when threads share the limiter: filter them all
            self._stamps = deque(s for s in self._stamps if s[0] > horizon)
        if len(self._stamps) < self.limit.requests:
            return 0.0
        oldest = min(s[0] for s in self._stamps)
        if oldest == _IN_FLIGHT:
            return 0.01  # all places are in flight: look again shortly
        return oldest + self.limit.window + MARGIN - now
