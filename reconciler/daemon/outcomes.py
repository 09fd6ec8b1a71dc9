"""What a pass says in the daemon's log: a line per cohort that changed or failed, the rest at DEBUG."""
from __future__ import annotations

import logging

from reconciler.common.statuses import QUIET, Status
from reconciler.running.reconciling import RunReport

log = logging.getLogger("reconciler.daemon.running")  # the logger operators filter on, as before


def log_outcomes(report: RunReport) -> None:
    """A line per cohort that sent something or failed; unchanged cohorts at DEBUG."""
    for o in report.outcomes:
        if o.result == Status.CONVERGED and (o.sent_adds or o.sent_removes):
            continue  # applying.py said so already, with the counts
        quiet = o.result in QUIET and not (o.sent_adds or o.sent_removes or o.requests)
        level = (logging.DEBUG if quiet else logging.INFO if o.ok or o.yielded
                 else logging.WARNING if o.result == Status.INTERRUPTED else logging.ERROR)
        log.log(level, "cohort %s: %s (+%d -%d)%s", o.plan.key, o.result, o.sent_adds, o.sent_removes,
                f": {o.error or o.plan.reason}" if (o.error or not o.ok) else "")
