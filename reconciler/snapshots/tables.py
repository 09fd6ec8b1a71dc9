"""The tables a warehouse snapshot lives in: their names, their shape, and the checksum of a row.

In the schema a connection names (`snapshots: SCHEMA`) cohortsync keeps one table per
(workspace, cohort), the members MoEngage is known to have, and one table of marks,
`cohortsync_snapshots`: per snapshot its owner (the state database's id), its generation (one
more with every write), its rows and their checksum, and the uids of its last write. A write
changes a snapshot and its mark in one transaction, on condition that the generation is still the
one the writer saw: the mark is how a plan tells a snapshot it can trust from one edited by hand,
half-written, restored from a backup or written by another state.

Each row carries `h`, a 31-bit hash of its uid computed by cohortsync (crc32): the checksum is
`SUM(h)` beside `COUNT(*)`, plain SQL that every dialect runs without a hash function of its own.
Names are ASCII lower case with no quoting needed anywhere: a slug of the cohort id and a digest
of the whole key, within PostgreSQL's 63 characters.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable

import sqlalchemy as sa

MARKS = "cohortsync_snapshots"
UID_LENGTH = 512  # the state's uid column: MoEngage's documented maximum (moengage/uids.py)
_SLUG = re.compile(r"[^a-z0-9]+")


def uid_hash(uid: str) -> int:
    """A row's `h`: what the checksum sums (31 bits, so that a billion of them fit a BIGINT)."""
    return zlib.crc32(uid.encode("utf-8")) >> 1


def checksum(uids: Iterable[str]) -> int:
    return sum(uid_hash(u) for u in uids)


def table_name(key: str) -> str:
    """`cs_snap_<slug>_<digest>` for a state key (`workspace:cohort`): unique, stable, never quoted."""
    slug = _SLUG.sub("_", key.lower()).strip("_")[:36]
    return f"cs_snap_{slug}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _uid_type(dialect: str) -> sa.types.TypeEngine:
    """Uids compare byte by byte: MariaDB and MySQL need a binary collation, the others compare so."""
    if dialect in ("mysql", "mariadb"):
        return sa.String(UID_LENGTH, collation="utf8mb4_bin")
    return sa.String(UID_LENGTH)


def marks_table(schema: str) -> sa.Table:
    return sa.Table(
        MARKS, sa.MetaData(schema=schema),
        sa.Column("key", sa.String(255), primary_key=True),  # the state key: workspace:cohort
        sa.Column("table_name", sa.String(63), nullable=False),
        sa.Column("state_id", sa.String(64), nullable=False),  # the state database that writes it
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.BigInteger, nullable=False),
        sa.Column("last_action", sa.String(16)),  # add_members, remove_members, or load (a move in)
        sa.Column("last_uids", sa.LargeBinary),  # the uids of the last write, newline-joined
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def snapshot_table(schema: str, name: str, dialect: str) -> sa.Table:
    return sa.Table(
        name, sa.MetaData(schema=schema),
        sa.Column("uid", _uid_type(dialect), primary_key=True),
        sa.Column("h", sa.Integer, nullable=False),
    )


def grant_hint(dialect: str, schema: str) -> str:
    """The one grant cohortsync needs on a warehouse, in its own dialect: create and write in one schema."""
    if dialect == "postgresql":
        return (f"CREATE SCHEMA {schema} AUTHORIZATION <cohortsync's user>; or, as its owner: "
                f"GRANT USAGE, CREATE ON SCHEMA {schema} TO <cohortsync's user>")
    if dialect in ("mysql", "mariadb"):
        return f"CREATE DATABASE {schema}; GRANT ALL PRIVILEGES ON {schema}.* TO <cohortsync's user>"
    if dialect == "snowflake":
        return f"CREATE SCHEMA {schema}; GRANT OWNERSHIP ON SCHEMA {schema} TO ROLE <cohortsync's role>"
    if dialect == "bigquery":
        return f"create the dataset {schema} and give cohortsync's service account roles/bigquery.dataEditor on it"
    return f"create the schema {schema} and let cohortsync's user create tables in it and write them"
