"""Waiting that a shutdown cuts short: a retry's backoff and the rate limiter's turn both wait so.

The daemon's stop event must end a wait at once, not after a backoff of up to a minute, so every
wait goes through `pause`, which turns "stop was set while we waited" into `Interrupted`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from reconciler.common.errors import Interrupted


def pause(delay: float, stop: threading.Event | None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait `delay` seconds: with `sleep` when nothing can stop us, else on `stop`, raising Interrupted when it is set."""
    if stop is None:
        sleep(delay)
    elif stop.wait(delay):
        raise Interrupted("shutting down")
