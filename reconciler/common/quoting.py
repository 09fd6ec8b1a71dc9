"""How an error quotes a value from a spec or the config: whole when short, else a marked prefix.

CI posts `plan --format markdown` as a pull-request comment, and errors reach it: an error that
quoted whole values would publish whatever a file held (a credential copied into a spec, a
`${VAR}` of the config expanded to a secret). So a value is quoted whole only up to PREFIX
characters; a longer one shows its first PREFIX characters in quotes and an ellipsis after the
closing quote (`'hunter2-'…`), which the README documents. Mappings and lists are named, not shown.
"""
from __future__ import annotations

from typing import Any

PREFIX = 8  # characters of a value an error may quote
CUT = "…"  # after the closing quote: the value goes on


def shown(value: Any) -> str:
    """A value as an error may quote it (README, "Pull requests from strangers")."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= PREFIX else repr(value[:PREFIX]) + CUT
    text = repr(value)  # numbers, booleans, null
    return text if len(text) <= PREFIX else text[:PREFIX] + CUT


def shown_all(values: Any) -> str:
    """Several values (unknown keys, say), each as `shown` quotes it, comma-separated."""
    return ", ".join(shown(v) for v in values)
