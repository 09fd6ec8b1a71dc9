"""MoEngage's naming rules, shared by spec validation, the client's checks and the emulator."""
from __future__ import annotations

import re

COHORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
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
