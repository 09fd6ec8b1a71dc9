"""Which files a cohorts repository may make cohortsync read: those inside its cohorts directory.

The plan workflow runs on pull requests, so a pull request's author controls every file under
`cohorts/`. A spec, a UID file or a SQL file that is (or passes through) a symlink to a file
outside, say a credentials file on the CI runner, would be read and its values could reach the
plan that CI posts. Every such file is checked here, by its name, before it is opened; the error
names the path as the repository gives it, never where it leads. Hard links are out of reach of
a name check (a hard link is the file itself) and out of scope.
"""
from __future__ import annotations

import os
from pathlib import Path

OUTSIDE = "outside the cohorts directory (a symlink out?)"
UNREAD = "it was not read; keep specs, UID files and SQL files inside the cohorts directory"


def path_problem(relative: str) -> str | None:
    """Why a path a spec names is refused before it is looked at, or None: NUL, absolute, `~`, `..`."""
    if "\0" in relative:
        return f"{_named(relative)} contains a NUL byte, which no path can hold"
    if os.path.isabs(relative) or relative.startswith("~"):
        return f"{_named(relative)} is absolute; give a path relative to the spec file"
    if ".." in Path(relative).parts:
        return f"{_named(relative)} climbs out with '..'; keep sources inside the cohorts directory"
    return None


def resolve_inside(relative: str, base: Path, root: Path) -> tuple[Path | None, str | None]:
    """A path relative to `base` (a spec's folder) that must lead to a file inside `root` (resolved)."""
    problem = path_problem(relative)
    if problem:
        return None, problem
    target = (base / relative).resolve()
    if not target.is_relative_to(root):
        return None, f"{_named(relative)} resolves {OUTSIDE}; {UNREAD}"
    return target, None


def found_outside(path: Path, root: Path) -> str | None:
    """Why a file found under `root` (a spec) must not be read, or None: it leads outside `root`."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return f"is a symlink that leads nowhere (a loop); {UNREAD}"
    if not target.is_relative_to(root):
        return f"resolves {OUTSIDE}; {UNREAD}"
    return None


def read_capped(path: Path, limit: int) -> bytes:
    """At most limit + 1 bytes of a file, not following a symlink put in its place since it was checked."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit + 1)


def _named(relative: str) -> str:
    """A path as an error names it: in full (it is how the file is found), control characters escaped."""
    return repr(relative if len(relative) <= 200 else relative[:200] + "…")
