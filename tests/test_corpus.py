"""The bad-input corpus (tests/corpus/): every file gets a clear error, none crashes, none removes members.

Each spec in corpus/specs/ replaces a synced cohort's spec (`victim`); its first line says the
message `validate` must print. Each file in corpus/uids/ replaces the victim's UID file.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.specs.cohorts import load_specs
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo, warehouse

CORPUS = Path(__file__).parent / "corpus"
SPECS = sorted((CORPUS / "specs").glob("*.yaml"))
UID_FILES = sorted((CORPUS / "uids").iterdir())
VICTIMS = [f"v{i:03d}" for i in range(40)]


def expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Repo:
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    wh, engine = warehouse(tmp_path / 'wh.db', VICTIMS)
    engine.dispose()
    r = Repo(tmp_path, connections={"wh": wh})
    r.file_cohort("victim", VICTIMS, guards={"allow_empty": True})
    r.file_cohort("other", VICTIMS[:3])
    (tmp_path / "outside.txt").write_text("x\n")
    os.symlink(tmp_path / "outside.txt", r.cohorts / "uids" / "escape.txt")
    return r


def with_emulator(repo: Repo, emulator) -> Repo:
    return Repo(repo.root, base_url=emulator.url, connections=yaml.safe_load(repo.config.read_text())["connections"])


@pytest.mark.parametrize("case", SPECS, ids=[p.stem for p in SPECS])
def test_validate_explains_each_bad_spec(repo, capsys, case):
    (repo.cohorts / "victim.yaml").write_bytes(case.read_bytes())
    code, _, err = repo.run(capsys, "validate")
    assert code == 1
    assert expectation(case) in err, err
    assert "victim.yaml" in err and "Traceback" not in err


def test_huge_spec_file(repo, capsys):
    (repo.cohorts / "victim.yaml").write_text("# padding " + "x" * (1 << 20) + "\nid: victim\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "a spec must be under" in err


@pytest.mark.parametrize("case", SPECS, ids=[p.stem for p in SPECS])
def test_a_bad_spec_removes_nothing(repo, emulator, capsys, case):
    repo = with_emulator(repo, emulator)
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "victim.yaml").write_bytes(case.read_bytes())
    code, out, err = repo.run(capsys, "apply", "--force", "--prune")
    assert code == 1 and "Traceback" not in out + err
    assert emulator.members("victim") == VICTIMS
    assert emulator.members("other") == VICTIMS[:3]


@pytest.mark.parametrize("case", UID_FILES, ids=[p.name for p in UID_FILES])
def test_a_bad_uid_file_removes_nothing(repo, emulator, capsys, case):
    repo = with_emulator(repo, emulator)
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "uids" / case.name).write_bytes(case.read_bytes())
    source = {"file": f"uids/{case.name}"}
    if case.name == "bad_csv_column.csv":
        source["column"] = "uid"
    (repo.cohorts / "victim.yaml").write_text(yaml.safe_dump(
        {"id": "victim", "name": ".victim", "source": source, "guards": {"allow_empty": True}}))
    code, out, err = repo.run(capsys, "apply", "--force")
    assert code == 1 and "error" in out and "Traceback" not in out + err
    assert emulator.members("victim") == VICTIMS


def test_sql_that_writes_is_refused_and_removes_nothing(repo, emulator, capsys):
    repo = with_emulator(repo, emulator)
    repo.spec("victim.yaml", "id: victim\nname: .victim\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    assert repo.run(capsys, "apply")[0] == 0
    repo.spec("victim.yaml", "id: victim\nname: .victim\nsource: {connection: wh, sql: DELETE FROM t RETURNING uid}\n")
    code, out, _ = repo.run(capsys, "apply", "--force")
    assert code == 1 and "readonly" in out.replace("-", "").replace(" ", "")
    engine = sa.create_engine(yaml.safe_load(repo.config.read_text())["connections"]["wh"])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == len(VICTIMS)
    engine.dispose()
    assert emulator.members("victim") == VICTIMS


KEYS = ["id", "name", "description", "source", "mode", "schedule", "guards", "suspended", "sql", "file", "sql_file",
        "column", "connection", "allow_empty", "max_removals", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from([".ok", "ok", "uids/victim.txt", "../x", "/etc", "10%", "15m"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=6)),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_fuzzed_specs_never_escape_validate(repo, doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    (repo.cohorts / "victim.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    specs = load_specs(repo.cohorts, ["wh"])  # any exception here fails the test
    assert "victim" in specs.specs or specs.errors


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_fuzzed_bytes_never_escape_validate(repo, raw):
    (repo.cohorts / "victim.yaml").write_bytes(raw)
    load_specs(repo.cohorts, ["wh"])
