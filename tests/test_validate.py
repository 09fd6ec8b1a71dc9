"""`validate`: one test per kind of bad spec, each with the message a user sees."""
from __future__ import annotations

import os

import pytest

from tests.helpers import Repo

GOOD = """\
id: good
name: .Good
source:
  file: uids/good.txt
"""


@pytest.fixture
def repo(tmp_path) -> Repo:
    r = Repo(tmp_path, connections={"warehouse": "sqlite:///:memory:"})
    r.spec("good.yaml", GOOD)
    (r.cohorts / "uids").mkdir()
    (r.cohorts / "uids" / "good.txt").write_text("u1\n")
    return r


def test_valid_specs(repo, capsys):
    code, out, _ = repo.run(capsys, "validate")
    assert code == 0 and "1 cohort spec(s) valid" in out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id: x\nname: [unclosed\n", "bad.yaml:3: invalid YAML: expected ','"),
        ("- a list\n", "a spec must be a YAML mapping"),
        ("id: x\nname: .X\n", "'source' is required"),
        ("id: x\nname: .X\nsource: {file: uids/good.txt}\ncolour: red\n", "bad.yaml:4: colour: unknown key 'colour'"),
        ("id: -x\nname: .X\nsource: {file: uids/good.txt}\n", "bad.yaml:1: id: '-x' must start with a letter or digit"),
        ("id: x\nname: No period\nsource: {file: uids/good.txt}\n", "name: 'No period' must start with '.'"),
        ("id: x\nname: .Bad|pipe\nsource: {file: uids/good.txt}\n", "name: '.Bad|pipe' must start with '.' and contain none of"),
        ("id: x\nname: .X\nsource: {file: uids/good.txt, sql: SELECT 1}\n", "exactly one of sql, sql_file, file is required (found: sql, file)"),
        ("id: x\nname: .X\nsource: {}\n", "exactly one of sql, sql_file, file is required (found: none)"),
        ("id: x\nname: .X\nmode: sometimes\nsource: {file: uids/good.txt}\n", "mode: 'sometimes' is not one of mirror, add_only"),
        ("id: x\nname: .X\nschedule: soon\nsource: {file: uids/good.txt}\n", "schedule: 'soon' is not a duration"),
        ("id: x\nname: .X\nguards: {max_removals: lots}\nsource: {file: uids/good.txt}\n", "'lots' is not a count"),
        ("id: x\nname: .X\nguards: {allow_empty: maybe}\nsource: {file: uids/good.txt}\n", "allow_empty: 'maybe' is not of type 'boolean'"),
        ("id: x\nname: .X\nsource: {file: ../outside.txt}\n", "source.file: '../outside.txt' climbs out with '..'"),
        ("id: x\nname: .X\nsource: {file: /etc/passwd}\n", "source.file: '/etc/passwd' is absolute"),
        ("id: x\nname: .X\nsource: {file: uids/missing.txt}\n", "uids/missing.txt does not exist"),
        ("id: x\nname: .X\nsource: {file: uids/good.json}\n", "must end in .txt, .csv"),
        ("id: x\nname: .X\nsource: {file: uids/good.txt, column: uid}\n", "column applies to .csv files only"),
        ("id: x\nname: .X\nsource: {sql: SELECT 1, connection: nowhere}\n", "no connection named 'nowhere' in the operator config (known: warehouse)"),
        ("id: x\nname: .X\nsource: {sql: SELECT 1}\n", "no connection named 'default'"),
        ("id: x\nname: .X\nsource: {sql_file: q/missing.sql, connection: warehouse}\n", "cannot read 'q/missing.sql'"),
        ("id: good\nname: .Other\nsource: {file: uids/good.txt}\n", "is also the id of"),
        ("id: other\nname: .Good\nsource: {file: uids/good.txt}\n", "is also the name of"),
        ("id: x\nid: y\nname: .X\nsource: {file: uids/good.txt}\n", "bad.yaml:2: id: key appears twice"),
        ("id: x\nname: .X\nsource: {file: uids/good.txt}\n---\nid: y\n", "invalid YAML"),
        ("id: x\nname: .X\nsource: {sql: 'SELECT ${SECRET}', connection: warehouse, file: a.txt}\n", "exactly one of"),
    ],
)
def test_bad_spec_is_reported_with_file_field_and_fix(repo, capsys, text, expected):
    repo.spec("bad.yaml", text)
    code, out, err = repo.run(capsys, "validate")
    assert code == 1, out
    assert expected in err, err
    assert "Traceback" not in err


def test_symlink_out_of_the_cohorts_dir(repo, capsys, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("u1\n")
    os.symlink(outside, repo.cohorts / "uids" / "link.txt")
    repo.spec("bad.yaml", "id: x\nname: .X\nsource: {file: uids/link.txt}\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "outside the cohorts directory" in err


def test_invalid_utf8_and_huge_spec_files(repo, capsys):
    (repo.cohorts / "latin1.yaml").write_bytes(b"id: x\nname: .Caf\xe9\n")
    (repo.cohorts / "huge.yaml").write_text("# " + "x" * (1 << 20) + "\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1
    assert "latin1.yaml: not valid UTF-8" in err and "huge.yaml: file is" in err


def test_every_error_of_every_file_in_one_run(repo, capsys):
    repo.spec("a.yaml", "id: a\nname: nodot\nsource: {file: uids/good.txt}\nextra: 1\n")
    repo.spec("b.yaml", "id: b\nname: .B\nsource: {}\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1
    assert "a.yaml:2: name:" in err and "a.yaml:4: extra:" in err and "b.yaml" in err
    assert "2 of 3 spec file(s) invalid (3 problem(s))" in err


def test_spec_variables_are_not_expanded(repo, capsys, monkeypatch):
    monkeypatch.setenv("SECRET_TABLE", "customers")
    repo.spec("var.yaml", "id: v\nname: .V\nsource: {connection: warehouse, sql: 'SELECT id FROM ${SECRET_TABLE}'}\n")
    code, out, err = repo.run(capsys, "plan", "--cohort", "v", "--format", "json")
    assert code == 1
    assert 'unrecognized token: \\"$\\"' in out  # SQLite saw the literal ${...}
    assert "customers" not in out


def test_bad_config_names_file_and_key(tmp_path, capsys):
    repo = Repo(tmp_path, moengage={"rate_limit": "fast"})
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "cohortsync.yaml: moengage.rate_limit:" in err


def test_missing_cohorts_dir(tmp_path, capsys):
    repo = Repo(tmp_path)
    repo.cohorts.rmdir()
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "directory not found" in err
