"""`validate`: what a user sees. The bad-spec corpus (one file per kind of mistake) is in test_corpus.py."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reconciler.settings.model import NAME_RULES
from reconciler.specs.rules import NAME_FORBIDDEN, cohort_name_problem, period_problem
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


def test_missing_uid_file(repo, capsys):
    repo.spec("bad.yaml", "id: x\nname: .X\nsource: {file: uids/missing.txt}\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "bad.yaml: source.file:" in err and "uids/missing.txt does not exist" in err


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


@pytest.mark.parametrize("rule", NAME_RULES)
@pytest.mark.parametrize("name", [".Good name", "Good name", ".ünïcode ✓", "no dot",
                                  *(f".a{c}b" for c in NAME_FORBIDDEN), *(f"a{c}b" for c in NAME_FORBIDDEN)])
def test_specs_and_the_emulator_hold_the_same_cohort_name_rule(name, rule):
    """A spec's name passes the schema's pattern (the characters) and the configured rule (the period)
    exactly when the emulator accepts it under that rule. (The schema alone also wants at most 256
    characters: a spec's own rule.)"""
    schema = json.loads((Path(__file__).resolve().parent.parent / "schema/cohort.schema.json").read_text())
    pattern = schema["properties"]["name"]["pattern"]
    spec_ok = re.search(pattern, name) is not None and period_problem(name, rule) is None
    assert spec_ok == (cohort_name_problem(name, rule) is None)
