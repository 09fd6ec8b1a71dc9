"""Sources: UID files in every format, SQL on SQLite and PostgreSQL, read-only and bounded."""
from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler.common.errors import SourceError
from reconciler.settings.model import ConnectionSettings, Secret
from reconciler.sources.reading import Engines, FileSource, SqlSource, normalize
from reconciler.specs.cohorts import CohortSpec, SourceSpec


def flat(source) -> list[str]:
    return [uid for chunk in source.chunks() for uid in chunk]


def file_spec(path: Path, column: str | None = None) -> CohortSpec:
    return CohortSpec("c", ".c", SourceSpec("file", path=path, column=column), "c.yaml")


def sql_spec(sql: str, connection: str = "db") -> CohortSpec:
    return CohortSpec("c", ".c", SourceSpec("sql", connection=connection, sql=sql), "c.yaml")


@pytest.mark.parametrize("value, expected", [
    ("  a  ", "a"), ("", None), ("   ", None), (None, None), (42, "42"), (42.0, "42"), (1.5, "1.5"),
    (Decimal("1000"), "1000"), (Decimal("12.50"), "12.5"), (b"bytes", "bytes"), (True, "1"),
])
def test_normalize(value, expected):
    assert normalize(value) == expected


def test_txt_strips_skips_blanks_keeps_duplicates_for_the_sorter(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text(" b \n\na\r\nb\n  \n")
    assert flat(FileSource(file_spec(path))) == ["b", "a", "b"]


def test_gz_and_csv(tmp_path):
    gz = tmp_path / "u.txt.gz"
    gz.write_bytes(gzip.compress(b"x\ny\n"))
    assert flat(FileSource(file_spec(gz))) == ["x", "y"]
    csv_path = tmp_path / "u.csv.gz"
    csv_path.write_bytes(gzip.compress(b'email,user_id\na@x,"  u1 "\nb@x,u2\nc@x,\n'))
    assert flat(FileSource(file_spec(csv_path, "user_id"))) == ["u1", "u2"]


def test_csv_defaults_to_uid_column_then_first(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("name,uid\nA,1\n")
    assert flat(FileSource(file_spec(path))) == ["1"]
    path.write_text("id,name\n7,A\n")
    assert flat(FileSource(file_spec(path))) == ["7"]


@pytest.mark.parametrize("name, content, message", [
    ("u.txt", b"ok\n\xff\xfe\n", "u.txt:2: not valid UTF-8"),
    ("u.txt", b"ok\nbad\x00uid\n", "u.txt:2: uid 'bad\\x00uid' contains the character '\\x00'"),
    ("u.csv", b'uid\n"multi\nline"\n', "contains the character '\\n'"),
    ("u.csv", b"uid\n\xff\n", "not valid UTF-8"),
    ("u.csv", b"user\nx\n", "no column 'nope' in the header (columns: 'user')"),
    ("u.txt.gz", b"not gzip at all", "cannot read"),
    ("u.txt.gz", gzip.compress(b"a\nb\n" * 1000, mtime=0)[:-20], "truncated"),
])
def test_bad_files_are_source_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    column = "nope" if b"user\n" in content else None
    with pytest.raises(SourceError) as info:
        flat(FileSource(file_spec(path, column)))
    assert message in str(info.value)


def test_missing_file(tmp_path):
    source = FileSource(file_spec(tmp_path / "gone.txt"))
    with pytest.raises(SourceError, match="cannot read"):
        source.digest()
    with pytest.raises(SourceError, match="cannot read"):
        flat(source)


def test_digest_follows_content_and_column(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("uid\na\n")
    first = FileSource(file_spec(path)).digest()
    assert FileSource(file_spec(path)).digest() == first
    assert FileSource(file_spec(path, "uid")).digest() != first
    path.write_text("uid\nb\n")
    assert FileSource(file_spec(path)).digest() != first


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb"])
def warehouse(request, tmp_path) -> str:
    url = {"sqlite": lambda: f"sqlite:///{tmp_path / 'wh.db'}",
           "postgresql": lambda: request.getfixturevalue("postgres_schema"),
           "mariadb": lambda: request.getfixturevalue("mariadb_database")}[request.param]()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (id INTEGER, ext TEXT, ltv NUMERIC(10,2))")
        conn.exec_driver_sql("INSERT INTO customers VALUES (10, ' a ', 600), (9, 'b', 100), (11, NULL, 700), (12, '', 800)")
    engine.dispose()
    return url


def read(url: str, sql: str, timeout: float = 30) -> list[str]:
    engines = Engines({"db": ConnectionSettings(Secret(url))})
    try:
        return flat(SqlSource(sql_spec(sql), engines, timeout))
    finally:
        engines.close()


def test_sql_numbers_become_decimal_text(warehouse):
    assert sorted(read(warehouse, "SELECT id FROM customers WHERE ltv > 500")) == ["10", "11", "12"]


def test_sql_text_is_stripped_and_nulls_and_empties_skipped(warehouse):
    assert sorted(read(warehouse, "SELECT ext, id FROM customers")) == ["a", "b"]


def test_sql_that_writes_is_refused(warehouse):
    with pytest.raises(SourceError, match="failed"):
        read(warehouse, "DELETE FROM customers RETURNING id")
    assert len(read(warehouse, "SELECT id FROM customers")) == 4


def test_sql_error_is_a_source_error(warehouse):
    with pytest.raises(SourceError) as info:
        read(warehouse, "SELECT nope FROM nowhere")
    assert "query on 'db' failed" in str(info.value) and "SELECT nope" not in str(info.value)


def test_sql_statement_timeout(warehouse):
    slow = {"sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
                      "SELECT max(i) FROM n",
            "postgresql": "SELECT pg_sleep(5)", "mysql": "SELECT SLEEP(5)"}[warehouse.split(":")[0].split("+")[0]]
    with pytest.raises(SourceError, match="failed"):
        read(warehouse, slow, timeout=0.3)


def test_unreachable_connection_is_a_source_error():
    with pytest.raises(SourceError, match="failed"):
        read("postgresql+psycopg://nobody@127.0.0.1:1/none", "SELECT 1")


def test_unknown_driver_is_a_source_error():
    with pytest.raises(SourceError, match="connection 'db'"):
        read("nosuchdb://x/y", "SELECT 1")


def test_uid_with_newline_from_sql_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    with pytest.raises(SourceError, match="row 1: uid 'a\\\\nb' contains"):
        read(url, "SELECT 'a' || char(10) || 'b'")


def test_blocks_split_lines_right_and_count_lines_across_blocks(tmp_path, monkeypatch):
    import reconciler.sources.reading as sources
    monkeypatch.setattr(sources, "BLOCK", 16)
    path = tmp_path / "u.txt"
    lines = [f"\tuser-{i}\r" for i in range(100)]
    path.write_text("\n".join(lines))  # no final newline; CRLF and tabs around uids are stripped
    assert flat(FileSource(file_spec(path))) == [f"user-{i}" for i in range(100)]
    lines[36] = "user\x0736"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"u.txt:37: uid 'user\\x0736'"):
        flat(FileSource(file_spec(path)))
    path.write_bytes(("\n".join(f"u{i}" for i in range(50)) + "\n").encode() + b"bad\xff\n")
    with pytest.raises(SourceError, match="u.txt:51: not valid UTF-8"):
        flat(FileSource(file_spec(path)))


def test_a_statement_without_rows_is_an_error(warehouse):
    with pytest.raises(SourceError):
        read(warehouse, "UPDATE customers SET ltv = 0 WHERE 1 = 0")
