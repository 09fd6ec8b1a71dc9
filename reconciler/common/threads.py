"""Ctrl-C and SIGTERM where they can be acted on: the main thread, and its blocking reads.

A process-directed signal goes to any thread that does not block it. Taken by a worker thread, it
sets Python's flag but does not wake a main thread blocked in a read (a tool's output, a helper's
messages), which then sees it only when that read returns: behind a tool waiting on a frozen
helper, never. A thread inherits the signal mask of the thread that starts it, so the main thread
blocks the two signals while it starts one (`starting_quiet_threads`).

And the KeyboardInterrupt that Ctrl-C raises can itself be lost: raised while a finalizer runs (an
object's `__del__`, say a finished subprocess's), it is printed and ignored, and the main thread
goes on into a read that may never return. So the CLI's handler also notes the interrupt
(`interrupted`), and the reads the main thread may block in wait for data a half second at a
time (`wait_readable`), raising it again once noted.
"""
from __future__ import annotations

import select
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

QUIET = {signal.SIGINT, signal.SIGTERM}
interrupted = threading.Event()  # Ctrl-C came (the CLI's handler): a read waiting for data raises it again
POLL = 0.5  # seconds a read waits for data before it looks at `interrupted`


@contextmanager
def starting_quiet_threads() -> Iterator[None]:
    """Threads started inside the block (directly, or by an executor's submit) block SIGINT and SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a worker's own workers inherit its mask, which already blocks them
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, QUIET)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def interrupt() -> NoReturn:
    """KeyboardInterrupt, noted first in case it is lost: what every SIGINT handler that stops at once raises."""
    interrupted.set()
    raise KeyboardInterrupt


def on_interrupt(signum: int, frame: FrameType | None) -> None:
    """The CLI's SIGINT handler: Python's own KeyboardInterrupt, noted as well."""
    interrupt()


@contextmanager
def noting_interrupts() -> Iterator[None]:
    """`on_interrupt` as the SIGINT handler for the block (the main thread only; the old one restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted.clear()
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupted.clear()


def wait_readable(fd: int) -> None:
    """Until `fd` has data (or its end): a half second at a time, raising KeyboardInterrupt once one was noted."""
    while not select.select([fd], [], [], POLL)[0]:
        if interrupted.is_set():
            raise KeyboardInterrupt
