"""The state's names for cohorts: one key per (workspace, cohort), and how to match them in SQL."""
from __future__ import annotations

from typing import Any

from reconciler.settings.model import DEFAULT_WORKSPACE

KEY_LENGTH = 200  # a workspace name, ":" and a cohort id
WORKSPACE_SEPARATOR = ":"  # in neither a workspace name nor a cohort id


def sync_key(workspace: str, cohort_id: str) -> str:
    """The state's name for one cohort in one workspace: two workspaces are two independent syncs.

    In the workspace `default` it is the cohort id itself, so a state written before workspaces
    existed (10M members, say) needs no rewrite; elsewhere `workspace:cohort_id`.
    """
    return cohort_id if workspace == DEFAULT_WORKSPACE else f"{workspace}{WORKSPACE_SEPARATOR}{cohort_id}"


def split_key(key: str) -> tuple[str, str]:
    """(workspace, cohort id) of a sync_key."""
    workspace, sep, cohort_id = key.partition(WORKSPACE_SEPARATOR)
    return (workspace, cohort_id) if sep else (DEFAULT_WORKSPACE, key)


def in_workspace(column: Any, workspace: str) -> Any:
    """SQL: the key in `column` names a cohort of `workspace`."""
    if workspace == DEFAULT_WORKSPACE:
        return column.not_like(f"%{WORKSPACE_SEPARATOR}%")
    return column.like(f"{like_literal(workspace)}{WORKSPACE_SEPARATOR}%", escape="\\")


def of_cohort(column: Any, cohort_id: str) -> Any:
    """SQL: the key in `column` names this cohort, in any workspace."""
    return column.like(f"%{WORKSPACE_SEPARATOR}{like_literal(cohort_id)}", escape="\\") | (column == cohort_id)


def like_literal(text: str) -> str:
    """Text matched as itself in a LIKE pattern: ids hold `_`, a wildcard."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
