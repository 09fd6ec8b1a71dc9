"""Driver-level cursors for reading millions of rows: no SQLAlchemy Row per row, and
server-side on PostgreSQL so rows stream instead of filling memory."""
from __future__ import annotations

from typing import Any

FETCH_ROWS = 20_000  # rows per round trip


def streaming_cursor(driver_connection: Any, dialect: str, name: str) -> Any:
    if dialect == "postgresql":
        cursor = driver_connection.cursor(name=name)
        cursor.itersize = FETCH_ROWS
        return cursor
    return driver_connection.cursor()
