"""Ctrl-C reaches the main thread, and a read it blocks in ends even when the KeyboardInterrupt was lost."""
import os
import signal
import threading
import time

import pytest

from reconciler.common import threads


def test_threads_started_quietly_block_ctrl_c_and_sigterm():
    seen: list[set] = []

    def look() -> None:
        seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))

    with threads.starting_quiet_threads():
        quiet = threading.Thread(target=look)
        quiet.start()
    quiet.join()
    loud = threading.Thread(target=look)
    loud.start()
    loud.join()
    assert {signal.SIGINT, signal.SIGTERM} <= seen[0]
    assert signal.SIGINT not in seen[1] and signal.SIGTERM not in seen[1]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the main thread's mask is back


def test_a_noted_interrupt_ends_a_read_that_would_wait_forever():
    read_end, write_end = os.pipe()
    try:
        with threads.noting_interrupts():
            threads.interrupted.set()  # as if the KeyboardInterrupt had been raised in a finalizer and lost
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                threads.wait_readable(read_end)
            assert time.monotonic() - started < 5
        assert not threads.interrupted.is_set()  # the next command starts clean
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_read_returns_as_soon_as_there_is_data_or_an_end():
    read_end, write_end = os.pipe()
    os.write(write_end, b"x\n")
    threads.wait_readable(read_end)
    assert os.read(read_end, 10) == b"x\n"
    os.close(write_end)
    threads.wait_readable(read_end)  # the end is readable too
    assert os.read(read_end, 10) == b""
    os.close(read_end)


def test_ctrl_c_during_the_block_raises_keyboard_interrupt_and_is_noted():
    before = signal.getsignal(signal.SIGINT)
    with threads.noting_interrupts():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs at the next bytecode
        assert threads.interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is before  # the old handler is back
