"""Work as /status shows it: a set of cohorts (or "all") and the reasons that asked for it.

The scheduler (scheduling.py) keeps the work itself, per cohort and by priority; these are the
shapes the status document and the page read for what is queued and what runs now.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALL = "*"


@dataclass
class Work:
    """Cohorts (state keys, or all of them) queued or running, and the reasons that asked for them."""

    cohorts: set[str] = field(default_factory=set)
    everything: bool = False
    reasons: set[str] = field(default_factory=set)
