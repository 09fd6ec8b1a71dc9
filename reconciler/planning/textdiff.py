"""The merge diff of a big cohort, done by GNU comm (and sort): no Python work per unchanged uid.

For a cohort of millions, the Python merge spends seconds splitting and comparing uids that
are the same on both sides. When the synced members come from the helper process
(readahead.py) as sorted text, `comm -3` compares them with the desired side and only the
differences, a small fraction at steady churn, come back to Python. The desired side is
either a plain file (`FileSource.plain_ascii`: every line already a uid), handed to the tools
as it is (`sort -u` orders it, unless `sort -C -u` finds it strictly sorted already), or the
checked chunks of any other source, written to comm as text by a thread.

Both tools run with LC_ALL=C, whose byte order is code-point order for UTF-8, the order the
state keeps. `comm --check-order` turns any ordering slip into a failure rather than a wrong
plan. A failure on either side raises once the output is read: a half-read synced side looks
like adds, so a caller keeps nothing of a diff that did not end cleanly.
"""
from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Iterator

from reconciler.planning.diffs import Tally
from reconciler.sources.ordering import SORT_MEMORY, c_locale, gnu_tool, output_blocks, sort_unique, start_feeder

class ToolFailed(Exception):
    """sort or comm did not finish cleanly; the message says which and why."""


def available() -> bool:
    """GNU sort and GNU comm are both on PATH (comm's --check-order is GNU's)."""
    return gnu_tool("sort") and gnu_tool("comm")


def strictly_sorted(path: str) -> bool:
    """The file's lines ascend strictly in byte order (so no duplicates); a fast read, no sort."""
    done = subprocess.run(["sort", "-C", "-u", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=c_locale())
    return done.returncode == 0


def comm_diff(desired: str | Iterable[bytes], synced: Iterable[bytes], tally: Tally, *, unsorted: bool = False,
              memory: str = SORT_MEMORY) -> Iterator[tuple[list[str], list[str]]]:
    """(adds, removes) of desired against synced, each ascending; both sides counted into `tally`.

    `desired` is the path of a plain file (sorted here unless already strictly sorted) or, like
    `synced`, blocks of newline-terminated lines: in strictly ascending order, or `unsorted`
    (any order, duplicates too), when `sort -u` orders them on their way into comm. The
    generator ends normally only if every tool and both sides finished cleanly; else it raises
    ToolFailed, or the exception a side raised (an OutOfOrder, a SourceError, a StateError).
    """
    procs, feeds = _start(desired, synced, tally, unsorted, memory)
    failures: list[BaseException] = []
    adds = removes = 0
    feeders: list[threading.Thread] = []
    try:
        for blocks, fd in feeds:
            feeders.append(start_feeder(blocks, fd, failures, "comm-feeder"))  # it closes its pipe when done
        try:
            for block in output_blocks(procs[-1]):
                if failures:  # a side failed: what comm says now is not the diff (an ended side looks empty)
                    raise failures[0]
                pair = _split(block.decode("utf-8"))
                adds, removes = adds + len(pair[0]), removes + len(pair[1])
                yield pair
        except OSError:
            pass  # comm's exit status and message are reported below
        for feeder in feeders:
            feeder.join()  # comm read each side to its end, or stopped and broke the pipe
        if failures:
            raise failures[0]
        _check(procs)
        if isinstance(desired, str) or unsorted:  # not counted on the way in: it follows from the rest
            tally.desired = tally.synced + adds - removes
    finally:
        for _, fd in feeds[len(feeders):]:
            os.close(fd)  # no feeder came to own it
        _stop(procs)


def _start(desired: str | Iterable[bytes], synced: Iterable[bytes], tally: Tally, unsorted: bool,
           memory: str) -> tuple[list[subprocess.Popen], list[tuple[Iterator[bytes], int]]]:
    """Start sort (for desired uids out of order) and comm; return them and the sides still to be
    written, each with the pipe it goes into."""
    env = c_locale()
    sort = sort_unique(memory)
    procs: list[subprocess.Popen] = []
    read_synced, write_synced = os.pipe()
    feeds = [(_counted(synced, tally, "synced"), write_synced)]
    ours = [read_synced]  # read ends the children hold their own copies of, once started
    comm_reads = [read_synced]  # those comm reads by /dev/fd path
    try:
        if isinstance(desired, str) and strictly_sorted(desired):
            first = desired
        elif isinstance(desired, str):
            procs.append(subprocess.Popen([*sort, "--", desired], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=env))
            first = "-"
        else:
            read_desired, write_desired = os.pipe()
            ours.append(read_desired)
            if unsorted:
                feeds.append((iter(desired), write_desired))
                procs.append(subprocess.Popen(sort, stdin=read_desired, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              env=env))
                first = "-"
            else:
                feeds.append((_counted(desired, tally, "desired"), write_desired))
                comm_reads.append(read_desired)
                first = f"/dev/fd/{read_desired}"
        procs.append(subprocess.Popen(["comm", "-3", "--check-order", "--", first, f"/dev/fd/{read_synced}"],
                                      stdin=procs[0].stdout if procs else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, pass_fds=comm_reads, env=env))
    except BaseException:
        for _, fd in feeds:
            os.close(fd)
        _stop(procs)
        raise
    finally:
        for fd in ours:
            os.close(fd)
        if len(procs) == 2:
            procs[0].stdout.close()  # type: ignore[union-attr]  # comm reads it now
    return procs, feeds


def _check(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.wait() != 0:
            message = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
            raise ToolFailed(f"{proc.args[0]} exited with status {proc.returncode}: {message or 'no message'}")


def _counted(blocks: Iterable[bytes], tally: Tally, side: str) -> Iterator[bytes]:
    for block in blocks:
        setattr(tally, side, getattr(tally, side) + block.count(b"\n"))
        yield block


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _split(text: str) -> tuple[list[str], list[str]]:
    """comm -3 prints lines only in the first input as they are, lines only in the second after a tab."""
    adds: list[str] = []
    removes: list[str] = []
    for line in text.split("\n"):
        if line.startswith("\t"):
            removes.append(line[1:])
        elif line:
            adds.append(line)
    return adds, removes
