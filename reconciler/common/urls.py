"""Database URLs from the config (`state_url`, `connections`) made into engines, and every way that fails.

A URL holds a password, and the config that names it may come from a pull request (the plan
workflow runs on `cohortsync.yaml` changes too): an unknown dialect, a missing driver, a port
that is not a number or a NUL byte must end as one sentence that names the fault, never the URL
with its password, and never as a traceback. The state and the SQL sources both come here.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from reconciler.common.errors import CohortSyncError


class BadUrl(CohortSyncError):
    """A URL that names no database cohortsync can open; the message holds no password."""


def parse_url(url: str) -> URL:
    """The URL parsed, or BadUrl saying why without repeating it."""
    if "\0" in url:
        raise BadUrl("it contains a NUL byte")
    try:
        return sa.engine.make_url(url)
    except ValueError as exc:  # a port that is not a number, among others
        raise BadUrl(_scrubbed(f"it is not a database URL ({_port_or(exc)})", url)) from None
    except sa.exc.ArgumentError:
        raise BadUrl("it is not a database URL: write dialect+driver://user:password@host:port/database") from None


def engine_for(parsed: URL, **options: Any) -> Engine:
    """create_engine, with an unknown dialect or a missing driver as BadUrl (the dialect is named:
    it is no secret, and the only way to see the typo)."""
    try:
        return sa.create_engine(parsed, **options)
    except sa.exc.NoSuchModuleError:
        raise BadUrl(f"no SQLAlchemy dialect {parsed.drivername[:60]!r} is installed "
                     "(postgresql+psycopg, mysql+pymysql, duckdb and sqlite are known)") from None
    except ImportError as exc:
        raise BadUrl(f"the driver of {parsed.drivername[:60]!r} is not installed ({exc.name or 'a module'} is "
                     "missing; see the postgres and mysql extras)") from None
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise BadUrl(_scrubbed(f"it cannot be opened: {type(exc).__name__}", parsed.password)) from None


def hidden(url: str) -> str:
    """A URL as logs and errors may name it: the password as ***; unparsable ones not at all."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "(a URL that does not parse)"


def _port_or(exc: ValueError) -> str:
    return "its port is not a number" if "int()" in str(exc) else "it does not parse"


def _scrubbed(message: str, secret: Any) -> str:
    """Belt and braces: a message never holds the password or the URL, even if a library put it there."""
    secret = str(secret) if secret else ""
    return message.replace(secret, "***") if len(secret) >= 3 else message
