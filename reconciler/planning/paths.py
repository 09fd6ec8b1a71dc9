"""Which way a cohort's diff runs: one decision, from what is known before a uid is read. Pure.

The paths, from the cheapest for a small cohort to the fastest for a big one:
- **here, Python**: the synced members are read in this process, the merge diff (diffs.py)
  compares them with the source's chunks as they stream. Every small cohort, and any cohort
  where another process cannot open the state (in-memory SQLite) or the helper fails to start.
- **helper, Python**: from `parallel_plan_min` synced members a helper process (readahead.py)
  reads them while this one reads the source; without GNU sort and comm the merge diff still
  compares them, here.
- **helper, comm**: with GNU sort and comm, comm compares (textdiff.py): the helper's sorted
  text against the source's, only the differences come back to Python. A plain ASCII `.txt`
  UID file goes to the tools as it is, unread here ("file"); any other source streams through
  Python's checks into the tools ("stream").

A source found out of order part-way is read again, sorted, by the path's `unsorted` way:
`sort -u` on its way into comm (with comm, unless the plan needs a digest of the desired set,
which needs the uids in order here); GNU sort of the file straight from disk (a `.txt` UID file,
when GNU sort is here); else an external merge sort in Python (ordering.py). A tool that fails
makes the cohort diff again on the Python path, with a warning (planner.py).
"""
from __future__ import annotations

from dataclasses import dataclass

HERE, HELPER = "here", "helper"  # who reads the synced members
PYTHON, COMM = "python", "comm"  # who compares
FILE, STREAM = "file", "stream"  # how the desired side reaches the comparer
SORT_INTO_COMM, SORT_FILE, EXTERNAL_SORT = "sort -u into comm", "GNU sort of the file", "external sort"


@dataclass(frozen=True)
class Facts:
    """What the planner knows about a cohort before reading it."""

    synced: int  # members the state holds for it
    parallel_plan_min: int  # the setting: from this many, a helper reads them
    helper_possible: bool  # another process can open the state (not an in-memory SQLite)
    tools: bool  # GNU sort and GNU comm are on PATH
    gnu_sort: bool  # GNU sort alone is
    text_file: bool  # the source is a .txt UID file (plain or gzipped: not; see FileSource.plain_text)
    plain_file: bool  # ... and every line is already a uid as read: printable ASCII, no padding
    digest: bool  # the plan needs a digest of the desired set (a saved plan of a SQL cohort)


@dataclass(frozen=True)
class Path:
    reader: str  # HERE or HELPER
    comparer: str  # PYTHON or COMM
    desired: str  # FILE or STREAM
    unsorted: str  # SORT_INTO_COMM, SORT_FILE or EXTERNAL_SORT

    def __str__(self) -> str:
        return (f"members read {self.reader}, compared by {self.comparer}, source as {self.desired}; "
                f"out of order: {self.unsorted}")


def choose(facts: Facts) -> Path:
    """The path a cohort's diff takes; see the module docstring for each."""
    helper = facts.helper_possible and facts.synced >= facts.parallel_plan_min
    comm = helper and facts.tools
    desired = FILE if comm and facts.plain_file else STREAM
    if comm and not facts.digest:
        unsorted = SORT_INTO_COMM
    elif facts.text_file and facts.gnu_sort:
        unsorted = SORT_FILE
    else:
        unsorted = EXTERNAL_SORT
    return Path(HELPER if helper else HERE, COMM if comm else PYTHON, desired, unsorted)
