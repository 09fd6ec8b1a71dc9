"""MoEngage's rules for a cohort: the name rule (a setting: MoEngage's own docs disagree) and the segment cap.

The emulator enforces them on requests; specs are checked against them by specs/cohorts.py (the
characters by the `name` pattern of schema/cohort.schema.json, where an editor sees them too;
the period by `name_rule_errors`, since it depends on the operator config). tests/test_validate.py
keeps the schema and this module in step.
"""
from __future__ import annotations

from collections.abc import Sequence

from reconciler.settings.model import DEFAULT_WORKSPACE, NAME_RULES

NAME_FORBIDDEN = '|*?\\:<>=$"'
LEADING_PERIOD, NO_LEADING_PERIOD = NAME_RULES
DEFAULT_NAME_RULE = LEADING_PERIOD
# A workspace holds at most this many active custom segments; one more is refused with a 429 that is
# not a rate limit (MOENGAGE_API.md, "More facts"). Dashboard segments count too.
MAX_ACTIVE_SEGMENTS = 1000
SEGMENT_CAP_MESSAGE = "Total active segments limit breached"


def period_problem(name: str, rule: str) -> str | None:
    """What `rule` says of the name's first character, or None when it holds."""
    if rule == LEADING_PERIOD and not name.startswith("."):
        return "must start with '.'"
    if rule == NO_LEADING_PERIOD and name.startswith("."):
        return "must not start with '.'"
    return None


def cohort_name_problem(name: object, rule: str = DEFAULT_NAME_RULE) -> str | None:
    """Why MoEngage would refuse this cohort name under `rule`, or None when it is fine.

    No minimum length: MoEngage documents none, so an empty name fails only the leading period.
    """
    if not isinstance(name, str):
        return "cohort_name must be a string"
    problem = period_problem(name, rule)
    if problem:
        return f"cohort_name {problem} (name rule {rule})"
    bad = sorted({c for c in name if c in NAME_FORBIDDEN})
    if bad:
        return f"cohort_name must not contain {' '.join(bad)} (none of {' '.join(NAME_FORBIDDEN)})"
    return None


def name_rule_setting(workspace: str = DEFAULT_WORKSPACE) -> tuple[str, str | None]:
    """Where a workspace's name rule is set: its config key, and its environment variable (the default's only)."""
    if workspace == DEFAULT_WORKSPACE:
        return "moengage.name_rule", "COHORTSYNC_NAME_RULE"
    return f"workspaces.{workspace}.name_rule", None


def how_to_switch(rule: str, workspace: str = DEFAULT_WORKSPACE) -> str:
    """One sentence: the rule configured for the workspace, and the setting that changes it."""
    key, env = name_rule_setting(workspace)
    other = NO_LEADING_PERIOD if rule == LEADING_PERIOD else LEADING_PERIOD
    wants = "without" if other == NO_LEADING_PERIOD else "with"
    variable = f" (or {env}={other})" if env else ""
    return (f"the configured name rule is {key}: {rule}; if this MoEngage account wants names {wants} "
            f"the leading period, set {key}: {other}{variable} and rename the cohorts to match")


def has_parentheses(name: str) -> bool:
    """A partner's documentation says MoEngage refuses them; unconfirmed, so only a warning."""
    return "(" in name or ")" in name


def segment_cap_problem(cohort_ids: Sequence[str], cap: int = MAX_ACTIVE_SEGMENTS) -> str | None:
    """A warning when one workspace's specs define more cohorts than it can hold segments, else None."""
    count = len(set(cohort_ids))
    if count <= cap:
        return None
    return (f"{count:,} cohorts for one workspace, but MoEngage holds at most {cap:,} active custom segments "
            f"(dashboard ones count too): past that, MoEngage refuses to create one; remove "
            f"{count - cap:,} or more, move some to another workspace, or archive unused segments in MoEngage")
