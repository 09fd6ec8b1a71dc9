"""Driver-level cursors for reading millions of rows: no SQLAlchemy Row per row, and
server-side on PostgreSQL so rows stream instead of filling memory."""
from __future__ import annotations

from typing import Any

FETCH_ROWS = 20_000  # rows per round trip


def streaming_cursor(driver_connection: Any, dialect: str, name: str) -> Any:
    """A cursor whose rows stay on the server until fetched: a named cursor on PostgreSQL, PyMySQL's
    unbuffered one on MariaDB and MySQL (read it to the end, or close it, before the next query)."""
    if dialect == "postgresql":
        cursor = driver_connection.cursor(name=name)
        cursor.itersize = FETCH_ROWS
        return cursor
    if dialect in ("mysql", "mariadb") and type(driver_connection).__module__.startswith("pymysql"):
        from pymysql.cursors import SSCursor
        return driver_connection.cursor(SSCursor)
    return driver_connection.cursor()
