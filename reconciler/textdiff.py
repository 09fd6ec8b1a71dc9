"""The merge diff of a big plain UID file, done by GNU sort and comm: no Python work per uid.

For a cohort of millions, the Python merge spends seconds splitting, checking and comparing
uids that are the same on both sides. When the source is a plain file whose lines are already
the uids (`FileSource.plain_ascii`), that work can go to coreutils: `sort -u` orders the file
(skipped when `sort -C -u` finds it strictly sorted already), and `comm -3` compares it with
the synced members, fed in as sorted text from the helper process that reads them
(readahead.py). Only the differences, a small fraction at steady churn, come back to Python.

Both tools run with LC_ALL=C, whose byte order is code-point order for UTF-8, the order the
state keeps. `comm --check-order` turns any ordering slip into a failure rather than a wrong
plan. A failure on either side raises once the output is read: a half-read synced side looks
like adds, so a caller keeps nothing of a diff that did not end cleanly.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator

from reconciler.ordering import SORT_MEMORY, gnu_tool, output_blocks

C_LOCALE = {"LC_ALL": "C"}


class ToolFailed(Exception):
    """sort or comm did not finish cleanly; the message says which and why."""


def available() -> bool:
    """GNU sort and GNU comm are both on PATH (comm's --check-order is GNU's)."""
    return gnu_tool("sort") and gnu_tool("comm")


def strictly_sorted(path: str) -> bool:
    """The file's lines ascend strictly in byte order (so no duplicates); a fast read, no sort."""
    done = subprocess.run(["sort", "-C", "-u", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env={**os.environ, **C_LOCALE})
    return done.returncode == 0


def comm_diff(path: str, synced: Iterable[bytes], *, presorted: bool,
              memory: str = SORT_MEMORY) -> Iterator[tuple[list[str], list[str]]]:
    """(adds, removes) of the file's lines against the synced text blocks, each ascending.

    `synced` yields blocks of whole newline-terminated lines in strictly ascending order. The
    generator ends normally only if sort, comm and the synced side all finished cleanly; else
    it raises ToolFailed, or the synced side's own exception.
    """
    env = {**os.environ, **C_LOCALE}
    procs: list[subprocess.Popen] = []
    read_synced, write_synced = os.pipe()
    sorter = None
    try:
        if not presorted:
            sorter = subprocess.Popen(["sort", "-u", "-S", memory, "--parallel=2", "-T", tempfile.gettempdir(),
                                       "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env)
            procs.append(sorter)
        comm = subprocess.Popen(["comm", "-3", "--check-order", "--", "-" if sorter else path, f"/dev/fd/{read_synced}"],
                                stdin=sorter.stdout if sorter else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(read_synced,), env=env)
        procs.append(comm)
    except BaseException:
        os.close(write_synced)
        _stop(procs)
        raise
    finally:
        os.close(read_synced)
        if sorter is not None and sorter.stdout is not None:
            sorter.stdout.close()  # comm reads it now
    failure: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(synced, write_synced, failure), name="comm-feeder", daemon=True)
    feeder.start()
    try:
        try:
            for block in output_blocks(comm):
                yield _split(block.decode("utf-8"))
        except OSError:
            pass  # comm's exit status and message are reported below
        feeder.join()  # comm read the synced side to its end, or stopped and broke the pipe
        if failure:
            raise failure[0]
        for proc in procs:
            if proc.wait() != 0:
                message = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
                raise ToolFailed(f"{proc.args[0]} exited with status {proc.returncode}: {message or 'no message'}")
    finally:
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _feed(blocks: Iterable[bytes], fd: int, failure: list[BaseException]) -> None:
    """Write the synced side into comm's second input; an error is kept for the reading side."""
    try:
        with os.fdopen(fd, "wb") as out:
            for block in blocks:
                out.write(block)
    except BrokenPipeError:
        pass  # comm stopped early; its exit status tells why
    except BaseException as exc:  # noqa: BLE001 - handed to the reading side, which raises it
        failure.append(exc)


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
