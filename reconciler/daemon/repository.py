"""The cohorts repository the daemon reads: `git pull --ff-only` before a triggered reconcile."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def git_pull(cohorts_dir: Path) -> None:
    """`git pull --ff-only` in the repository holding the cohorts; a failure is logged, not fatal."""
    try:
        top = subprocess.run(["git", "-C", str(cohorts_dir), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip()
        out = subprocess.run(["git", "-C", top, "pull", "--ff-only", "--quiet"], capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("git pull failed: %s", exc)
        return
    if out.returncode != 0:
        log.error("git pull --ff-only failed: %s", (out.stderr or out.stdout).strip()[:500])
    else:
        log.info("git pull --ff-only done in %s", top)
