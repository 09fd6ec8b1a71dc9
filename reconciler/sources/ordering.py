"""Sorted, unique uid streams in Python's code-point order, as chunks, with memory bounded.

Streams travel as chunks (lists of a few tens of thousands of uids) so that the per-uid work
happens in C (sorting, set arithmetic, bisect) rather than in a Python loop per uid.

The merge diff needs both sides in the same order. A source may already deliver that order
(a sorted file, an ORDER BY with a binary collation): `checked` passes it through and raises
OutOfOrder the moment it is not. Otherwise `external_sort` sorts in runs of `run_size` uids,
spilled to temporary files and merged, so memory stays flat whatever the cohort size.
"""
from __future__ import annotations

import functools
import heapq
import operator
import os
import shutil
import subprocess
import tempfile
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO

from reconciler.common.threads import starting_quiet_threads, wait_readable

RUN_SIZE = 500_000  # uids sorted in memory at once (about 40 MB of short strings)
CHUNK = 50_000  # uids per chunk handed downstream
SORT_MEMORY = "16M"  # GNU sort's buffer: as fast as 64M on 10M uids (merging dominates), a quarter the RSS


class OutOfOrder(Exception):
    """A stream that was expected sorted was not; the caller falls back to sorting."""


def _all(op: object, chunk: list[str]) -> bool:
    return all(map(op, chunk, islice(chunk, 1, None)))  # type: ignore[call-overload]


def checked(chunks: Iterable[list[str]]) -> Iterator[list[str]]:
    """Pass sorted chunks through, duplicates dropped; raise OutOfOrder on any step back."""
    last: str | None = None
    for chunk in chunks:
        if not chunk:
            continue
        if not _all(operator.lt, chunk):  # strictly ascending is the common case: no copy, no set
            if not _all(operator.le, chunk):
                raise OutOfOrder(f"out of order within {chunk[0]!r}..{chunk[-1]!r}")
            chunk = unique(chunk)
        if last is not None:
            if chunk[0] < last:
                raise OutOfOrder(f"{chunk[0]!r} came after {last!r}")
            start = bisect_right(chunk, last)  # copies of `last` carried over from the previous chunk
            chunk = chunk[start:] if start else chunk
            if not chunk:
                continue
        last = chunk[-1]
        yield chunk


def unique(sorted_chunk: list[str]) -> list[str]:
    """Adjacent duplicates removed."""
    return [u for i, u in enumerate(sorted_chunk) if i == 0 or u != sorted_chunk[i - 1]]


def rechunk(uids: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    it = iter(uids)
    while chunk := list(islice(it, size)):
        yield chunk


def external_sort(chunks: Iterable[list[str]], run_size: int = RUN_SIZE) -> Iterator[list[str]]:
    """Sorted, unique chunks whatever the input size; uids must hold no newline (sources check).

    GNU sort does it about five times faster than Python in a few tens of MB (byte order under
    LC_ALL=C is code-point order for UTF-8); without it, runs are sorted here and merged.
    """
    if gnu_sort_available():
        yield from gnu_sort(chunks)
    else:
        yield from python_sort(chunks, run_size)


@functools.cache
def gnu_tool(name: str) -> bool:
    """`name` is on PATH and is the GNU coreutils one (whose options we rely on)."""
    exe = shutil.which(name)
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "GNU" in out


def gnu_sort_available() -> bool:
    return gnu_tool("sort")


def c_locale() -> dict[str, str]:
    """The environment for GNU tools: under LC_ALL=C they compare bytes, code-point order for UTF-8."""
    return {**os.environ, "LC_ALL": "C"}


def sort_unique(memory: str = SORT_MEMORY) -> list[str]:
    """`sort -u` with a bounded buffer, both cores, spilling to the temporary folder; add the input."""
    return ["sort", "-u", "-S", memory, "--parallel=2", "-T", tempfile.gettempdir()]


def gnu_sort(chunks: Iterable[list[str]], memory: str = SORT_MEMORY) -> Iterator[list[str]]:
    """`sort -u` in a child process, fed from a thread so neither side blocks the other."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(sort_unique(memory), stdin=read_end, stdout=subprocess.PIPE, env=c_locale())
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)  # sort has its own copy
    failures: list[BaseException] = []
    feeder = start_feeder(as_text(chunks), write_end, failures, "sort-feeder")
    for block in output_blocks(proc):
        yield block.decode("utf-8").split("\n")
    feeder.join()
    if failures:
        raise failures[0]


def gnu_sort_file(path: str, memory: str = SORT_MEMORY) -> Iterator[bytes]:
    """A file's distinct lines in byte order, as blocks of whole lines, sorted by GNU sort itself."""
    proc = subprocess.Popen([*sort_unique(memory), "--", path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=c_locale())
    yield from output_blocks(proc)


def as_text(chunks: Iterable[list[str]]) -> Iterator[bytes]:
    """Uid chunks as blocks of newline-terminated lines, the way GNU tools read them."""
    for chunk in chunks:
        if chunk:
            yield ("\n".join(chunk) + "\n").encode("utf-8")


def start_feeder(blocks: Iterable[bytes], fd: int, failures: list[BaseException], name: str) -> threading.Thread:
    """A daemon thread that runs `feed`, deaf to Ctrl-C and SIGTERM (common/threads.py): the main thread,
    blocked reading the tool's output, must be the one they wake."""
    thread = threading.Thread(target=feed, args=(blocks, fd, failures), name=name, daemon=True)
    with starting_quiet_threads():
        thread.start()
    return thread


def feed(blocks: Iterable[bytes], fd: int, failures: list[BaseException]) -> None:
    """Write blocks into a tool's input pipe, then close it; run it in a thread of its own.

    An error is kept in `failures` for the reading side, which raises it. The blocks' own
    generator is closed here, in the thread that ran it (a database cursor may care). Start it with
    `start_feeder`, so that Ctrl-C and SIGTERM are never delivered to it.
    """
    try:
        with os.fdopen(fd, "wb") as out:
            for block in blocks:
                out.write(block)
    except BrokenPipeError:
        pass  # the tool stopped early; its exit status tells why
    except BaseException as exc:  # noqa: BLE001 - handed to the reading side, which raises it
        failures.append(exc)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


def output_blocks(proc: subprocess.Popen) -> Iterator[bytes]:
    """Whole lines of a tool's output, about 1 MB at a time; the process is reaped whatever happens."""
    assert proc.stdout is not None
    try:
        tail = b""
        for block in iter(lambda: _read_some(proc.stdout), b""):  # type: ignore[arg-type]
            block = tail + block
            cut = block.rfind(b"\n")
            tail, block = block[cut + 1:], block[:cut]
            if block:
                yield block
        if tail:
            yield tail
        if proc.wait() != 0:
            raise OSError(f"{proc.args[0]} exited with status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _read_some(stream: IO[bytes], size: int = 1 << 20) -> bytes:
    """The tool's next `size` bytes (fewer at its end), as `read(size)` would, but waiting for each
    pipeful with `wait_readable`, so that a Ctrl-C ends the wait. Blocks this big keep the per-block
    work downstream rare: a pipe hands over 64 KB at a time."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        wait_readable(stream.fileno())
        part = stream.read1(left)  # type: ignore[attr-defined]
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def python_sort(chunks: Iterable[list[str]], run_size: int = RUN_SIZE) -> Iterator[list[str]]:
    """Runs of `run_size` sorted in memory, spilled, and merged."""
    runs: list[IO[bytes]] = []
    try:
        run: list[str] = []
        for chunk in chunks:
            run.extend(chunk)
            if len(run) >= run_size:
                runs.append(_spill(run))
                run = []
        if not runs:
            run.sort()
            yield from checked(rechunk(run))
            return
        if run:
            runs.append(_spill(run))
        del run
        yield from checked(rechunk(heapq.merge(*(_read(r) for r in runs))))
    finally:
        for r in runs:
            r.close()


def _spill(run: list[str]) -> IO[bytes]:
    run.sort()
    fh = tempfile.TemporaryFile(prefix="cohortsync-sort-")
    fh.write("\n".join(run).encode("utf-8"))
    fh.write(b"\n")
    fh.seek(0)
    return fh


def _read(fh: IO[bytes]) -> Iterator[str]:
    for block in iter(lambda: fh.readlines(1 << 20), []):
        yield from (line[:-1].decode("utf-8") for line in block)


class Spool:
    """Uids written as they come, read back sorted and unique (external_sort: memory stays flat)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="cohortsync-spool-")
        self.count = 0

    def add(self, uids: list[str]) -> None:
        if uids:
            self._file.write(("\n".join(uids) + "\n").encode("utf-8"))
            self.count += len(uids)

    def sorted(self) -> Iterator[list[str]]:
        self._file.flush()
        self._file.seek(0)
        lines = (line[:-1].decode("utf-8") for line in self._file)
        return external_sort(rechunk(lines))

    def close(self) -> None:
        self._file.close()
