"""The two things MoEngage's Cohort Sync API can be asked to do with members.

The values are MoEngage's own `action` strings; the state keeps them in its batches and its
changelog, so they are kept here, once, below every stage that names them.
"""
from __future__ import annotations

from enum import Enum


class Action(str, Enum):
    ADD = "add_members"
    REMOVE = "remove_members"

    def __str__(self) -> str:
        return self.value

    def delta(self, count: int) -> int:
        """How `count` uids of this action change a segment's size."""
        return count if self is Action.ADD else -count
