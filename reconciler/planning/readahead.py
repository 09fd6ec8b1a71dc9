"""A big cohort's synced members, read by a helper process so that a plan uses two cores.

Fetching ten million rows through a DBAPI driver costs about three seconds of Python, and the
GIL keeps a thread from overlapping that with reading the source. So for a big cohort (the
`parallel_plan_min` setting) a helper, `python -m reconciler.planning.readahead`, reads the members,
checks their order and appends them, a block of newline-terminated uids at a time, to an
unlinked temporary file; over a pipe it tells the parent where each block lies. The parent
reads the blocks as the diff asks for them.

The uids travel through a file, not the pipe, so the helper never waits for the parent (while
GNU sort holds the source back, say), and a second pass over the members, after a source turns
out to be unsorted, reads the file again instead of the database. The blocks are sorted text
that GNU comm can read as they are (textdiff.py). Uids cannot hold a newline (sources refuse
it), and each block's count is checked when it is split all the same.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Protocol

from reconciler.common.errors import StateError
from reconciler.common.threads import wait_readable
from reconciler.state.database import make_engine
from reconciler.state.store import StateStore, synced_in_order

log = logging.getLogger(__name__)


class SyncedMembers(Protocol):
    """A cohort's synced members as sorted chunks; iterable more than once; close() when done."""

    def __iter__(self) -> Iterator[list[str]]: ...

    def close(self) -> None: ...


class InProcess:
    """The members read here, from the database, on each pass."""

    def __init__(self, state: StateStore, cohort_id: str) -> None:
        self.state, self.cohort_id = state, cohort_id

    def __iter__(self) -> Iterator[list[str]]:
        return synced_in_order(self.state, self.cohort_id)

    def close(self) -> None:
        pass


def shareable(state: StateStore) -> bool:
    """Whether another process can open this state database (not an in-memory SQLite)."""
    url = state.engine.url
    return not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


def synced_members(state: StateStore, cohort_id: str, helper: bool) -> SyncedMembers:
    """The members read by a helper process when the diff path says so (paths.py) and one starts;
    else read in this process."""
    if not helper:
        return InProcess(state, cohort_id)
    try:
        return ReadAhead(state.engine.url.render_as_string(hide_password=False), cohort_id)
    except OSError as exc:
        log.debug("cohort %s: cannot start a reader process (%s); reading members here", cohort_id, exc)
        return InProcess(state, cohort_id)


class ReadAhead:
    """Members streamed by a helper process into a temporary file, block by block."""

    def __init__(self, url: str, cohort_id: str) -> None:
        self.cohort_id = cohort_id
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="cohortsync-members-")
        package_root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        read_messages, write_messages = os.pipe()  # a channel of its own: a stray print cannot garble it
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler.planning.readahead"], stdin=subprocess.PIPE, stdout=2,
                pass_fds=(self._file.fileno(), write_messages), env={**os.environ, "PYTHONPATH": path})
        except OSError:
            os.close(read_messages)
            self._file.close()
            raise
        finally:
            os.close(write_messages)
        try:  # from here on the helper runs: whatever goes wrong (Ctrl-C included) must stop it
            assert self._proc.stdin is not None
            self._messages = os.fdopen(read_messages, "rb", buffering=0)  # unbuffered: a wait on its fd sees every line
            job = {"url": url, "cohort_id": cohort_id, "fd": self._file.fileno(), "channel": write_messages}
            try:
                self._proc.stdin.write(json.dumps(job).encode())  # on stdin: no secret on a command line
                self._proc.stdin.close()
            except OSError:
                pass  # the helper died at once; its exit status is reported on the first read
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            self._file.close()
            raise
        self._blocks: list[tuple[int, int, int]] = []  # (offset, length, count) of each block so far
        self._done = False
        self._error: StateError | None = None

    def __iter__(self) -> Iterator[list[str]]:
        for data, count in self._blocks_read():
            uids = data.decode("utf-8").split("\n")
            uids.pop()  # each block ends with a newline
            if len(uids) != count:
                raise StateError(f"members of {self.cohort_id}: a block read back from the helper's file is damaged")
            yield uids

    def text_blocks(self) -> Iterator[bytes]:
        """The members as sorted text, newline-terminated lines, block by block (for GNU comm)."""
        for data, _ in self._blocks_read():
            yield data

    @property
    def count(self) -> int:
        """Members announced so far: all of them once a pass has ended."""
        return sum(count for _, _, count in self._blocks)

    def _blocks_read(self) -> Iterator[tuple[bytes, int]]:
        index = 0
        while True:
            while index >= len(self._blocks) and not self._done:
                self._receive()
            if index >= len(self._blocks):
                return
            offset, length, count = self._blocks[index]
            index += 1
            data = os.pread(self._file.fileno(), length, offset)
            if len(data) != length:
                raise StateError(f"members of {self.cohort_id}: the helper's file is shorter than it said")
            yield data, count

    def _receive(self) -> None:
        """Take the helper's next message; raise the error it stands for, if any (and ever after)."""
        if self._error is None:
            if threading.current_thread() is threading.main_thread():
                wait_readable(self._messages.fileno())  # a Ctrl-C, even one lost in a finalizer, ends the wait
            self._error = self._take(self._messages.readline().decode("utf-8", "replace").rstrip("\n"))
        if self._error is not None:
            raise self._error

    def _take(self, line: str) -> StateError | None:
        """Record one message: a block's place, the end, or the helper's error; None when all is well."""
        kind, _, rest = line.partition(" ")
        try:
            if kind == "block":
                offset, length, count = map(int, rest.split())
                self._blocks.append((offset, length, count))
                return None
            if kind == "done":
                self._done = True
                return None
            if kind == "error":
                return StateError(str(json.loads(rest)))
        except ValueError:
            pass
        if line:
            return StateError(f"the process reading members of {self.cohort_id} sent {line[:80]!r}")
        return StateError(f"the process reading members of {self.cohort_id} stopped "
                          f"(exit status {self._proc.wait()}) before it finished")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._messages.close()
        self._file.close()


def _serve(job: dict, say: Callable[[str], None]) -> None:
    """The helper's side: members in order, each block written to the file, then announced."""
    out = os.fdopen(job["fd"], "wb")
    offset = 0
    try:
        state = StateStore(make_engine(job["url"]))  # read only: no migration from here
        for chunk in synced_in_order(state, job["cohort_id"]):
            data = "\n".join(chunk).encode("utf-8") + b"\n"
            out.write(data)
            out.flush()  # on disk (in the page cache) before the parent hears of it
            say(f"block {offset} {len(data)} {len(chunk)}")
            offset += len(data)
    except StateError as exc:
        say(f"error {json.dumps(exc.args[0] if exc.args else str(exc))}")
        return
    say("done")


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    job = json.loads(sys.stdin.read())
    channel = os.fdopen(job["channel"], "w")

    def say(message: str) -> None:
        channel.write(message + "\n")
        channel.flush()  # the parent may be waiting for this very block

    try:
        _serve(job, say)
    except BrokenPipeError:  # the parent is gone or no longer wants the members
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
