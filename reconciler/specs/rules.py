"""MoEngage's cohort-name rule, as the emulator enforces it.

Specs are checked against the same rule by the `name` pattern of schema/cohort.schema.json
(where an editor sees it too); tests/test_validate.py keeps the two in step.
"""
from __future__ import annotations

NAME_FORBIDDEN = '|*?\\:<>=$"'


def cohort_name_problem(name: object) -> str | None:
    """Why MoEngage would refuse this cohort name, or None when it is fine."""
    if not isinstance(name, str) or not name:
        return "cohort_name must be a non-empty string"
    if not name.startswith("."):
        return "cohort_name must start with a period '.'"
    bad = sorted({c for c in name if c in NAME_FORBIDDEN})
    if bad:
        return f"cohort_name must not contain {' '.join(bad)} (none of {' '.join(NAME_FORBIDDEN)})"
    return None
