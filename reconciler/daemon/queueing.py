"""Work as /status shows it: a set of cohorts (or "all") and the reasons that asked for it.

The scheduler (scheduling.py) keeps the work itself, per cohort and by priority; these are the
shapes the status document and the page read for what is queued and what runs now.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALL = "*"


@dataclass
class Work:
    """What the worker should do next: these cohorts (or all), and why."""

    cohorts: set[str] = field(default_factory=set)
    everything: bool = False
    reasons: set[str] = field(default_factory=set)
    git_pull: bool = False

    @property
    def only(self) -> list[str]:
        """The --cohort selection: empty means every cohort."""
        return [] if self.everything else sorted(self.cohorts)

    def describe(self) -> str:
        what = "all cohorts" if self.everything else ", ".join(sorted(self.cohorts))
        return f"{what} ({', '.join(sorted(self.reasons))})"
