"""plan and apply end to end: the CLI, a real emulator process, UID files and SQL warehouses."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo

USERS = [f"u{i:04d}" for i in range(1, 501)]


def plan_json(repo: Repo, capsys, *args: str) -> tuple[int, dict]:
    code, out, err = repo.run(capsys, "plan", "--format", "json", *args)
    assert "Traceback" not in err
    return code, {c["id"]: c for c in json.loads(out)["cohorts"]}


def sent(emulator, cohort_id: str, action: str) -> int:
    return sum(r["members"] for r in emulator.requests() if r["cohort_id"] == cohort_id and r["action"] == action
               and r["status"] == 200)


def test_first_apply_sends_all_then_nothing_then_exactly_the_change(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:300])
    repo.file_cohort("vip", USERS[200:260])
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    assert emulator.members("beta") == USERS[:300] and emulator.members("vip") == USERS[200:260]

    code, plans = plan_json(repo, capsys, "--detailed-exitcode")
    assert code == 0 and {p["status"] for p in plans.values()} == {"unchanged"}

    repo.uids("beta", USERS[10:310])
    code, plans = plan_json(repo, capsys, "--detailed-exitcode")
    assert code == 2
    beta = plans["beta"]
    assert (beta["status"], beta["adds"], beta["removes"], beta["desired"], beta["synced"]) == ("changed", 10, 10, 300, 300)
    assert beta["sample_adds"] == USERS[300:305] and beta["sample_removes"] == USERS[:5]
    assert plans["vip"]["status"] == "unchanged"

    before = len(emulator.requests())
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    new = emulator.requests()[before:]
    assert sorted((r["action"], r["members"]) for r in new) == [("add_members", 10), ("remove_members", 10)]
    assert emulator.members("beta") == USERS[10:310]


def test_plan_formats_and_text(repo, capsys):
    repo.file_cohort("beta", USERS[:3])
    code, out, _ = repo.run(capsys, "plan")
    assert code == 0 and "beta" in out and "+3 -0" in out and "u0001, u0002, u0003" in out
    code, out, _ = repo.run(capsys, "plan", "--format", "markdown")
    assert out.startswith("### cohortsync plan: +3 -0") and "| `beta` | changed |" in out
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    doc = json.loads(out)
    assert doc["format_version"] == 1 and doc["totals"]["adds"] == 3
    assert set(doc["cohorts"][0]) >= {"id", "name", "status", "desired", "synced", "adds", "removes", "requests"}


def test_dry_run_sends_and_writes_nothing(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:3])
    code, out, _ = repo.run(capsys, "apply", "--dry-run")
    assert code == 0 and "Dry run" in out
    assert emulator.requests() == []
    code, plans = plan_json(repo, capsys)
    assert plans["beta"]["adds"] == 3


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sql_cohort_follows_the_table(repo, emulator, capsys, request, tmp_path, backend):
    url = f"sqlite:///{tmp_path / 'wh.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_schema")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (user_id VARCHAR(20), ltv INTEGER)")
        conn.execute(sa.text("INSERT INTO customers VALUES (:u, :v)"), [{"u": u, "v": i} for i, u in enumerate(USERS)])
    repo.connect("warehouse", url)
    repo.spec("vip.yaml", "id: vip\nname: .VIP\nsource:\n  connection: warehouse\n  sql: SELECT user_id FROM customers WHERE ltv >= 400\n")
    repo.spec("q/mid.sql", "SELECT user_id, ltv FROM customers WHERE ltv BETWEEN 100 AND 199")
    repo.spec("mid.yaml", "id: mid\nname: .Mid\nsource: {connection: warehouse, sql_file: q/mid.sql}\n")
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("vip") == USERS[400:] and emulator.members("mid") == USERS[100:200]

    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE customers SET ltv = 0 WHERE user_id IN ('u0401', 'u0402')")
        conn.exec_driver_sql("UPDATE customers SET ltv = 450 WHERE user_id = 'u0001'")
    engine.dispose()
    code, plans = plan_json(repo, capsys)
    assert (plans["vip"]["adds"], plans["vip"]["removes"]) == (1, 2) and plans["vip"]["sample_adds"] == ["u0001"]
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("vip") == sorted({*USERS[400:], "u0001"} - {"u0401", "u0402"})


def test_add_only_never_removes(repo, emulator, capsys):
    repo.file_cohort("news", USERS[:50], mode="add_only")
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("news", USERS[40:60])
    code, plans = plan_json(repo, capsys)
    assert (plans["news"]["adds"], plans["news"]["removes"]) == (10, 0)
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("news") == USERS[:60]


def test_allow_empty_guard_blocks_then_force_empties(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:20])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", [])
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "blocked" in out and "allow_empty" in out
    assert emulator.members("beta") == USERS[:20]
    code, out, _ = repo.run(capsys, "apply", "--force")
    assert code == 0, out
    assert emulator.members("beta") == []


def test_allow_empty_true_lets_it_empty(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:20], guards={"allow_empty": True})
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", [])
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("beta") == []


def test_max_removals_guard(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:100], guards={"max_removals": "10%"})
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[:90])  # 10 removals: at the limit
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[:80])  # 10 of 90 is over 10%
    code, plans = plan_json(repo, capsys)
    assert code == 1 and plans["beta"]["status"] == "blocked" and "max_removals 10%" in plans["beta"]["reason"]
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and emulator.members("beta") == USERS[:90]
    assert repo.run(capsys, "apply", "--force")[0] == 0
    assert emulator.members("beta") == USERS[:80]


def test_suspended_shows_in_plan_and_is_skipped(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5], suspended=True)
    code, plans = plan_json(repo, capsys)
    assert code == 0 and plans["beta"]["status"] == "suspended" and plans["beta"]["adds"] == 5
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0 and emulator.requests() == []


def test_orphan_is_reported_then_pruned(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5])
    repo.file_cohort("old", USERS[:7])
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "old.yaml").unlink()
    code, plans = plan_json(repo, capsys)
    assert code == 0 and plans["old"]["status"] == "orphaned" and plans["old"]["removes"] == 0
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("old") == USERS[:7]
    code, plans = plan_json(repo, capsys, "--prune")
    assert plans["old"]["removes"] == 7
    code, out, _ = repo.run(capsys, "apply", "--prune")
    assert code == 0 and "pruned" in out
    assert emulator.members("old") == []
    code, plans = plan_json(repo, capsys, "--prune")
    assert "old" not in plans


def test_no_pruning_while_a_spec_is_broken(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5])
    repo.file_cohort("old", USERS[:7])
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "old.yaml").unlink()
    repo.spec("broken.yaml", "id: broken\nname: nodot\nsource: {file: uids/beta.txt}\n")
    code, out, _ = repo.run(capsys, "apply", "--prune")
    assert code == 1 and "not pruning" in out
    assert emulator.members("old") == USERS[:7]


def test_broken_spec_keeps_its_members_and_others_go_on(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5])
    repo.file_cohort("vip", USERS[:3])
    assert repo.run(capsys, "apply", "--prune")[0] == 0
    (repo.cohorts / "beta.yaml").write_text("id: beta\nname: .beta\nsource: {file: uids/beta.txt\n")  # broken YAML
    repo.uids("vip", USERS[:4])
    code, out, err = repo.run(capsys, "apply", "--prune")
    assert code == 1 and "beta.yaml" in out and "invalid YAML" in out
    assert emulator.members("beta") == USERS[:5] and emulator.members("vip") == USERS[:4]


def test_missing_source_file_is_an_error_and_removes_nothing(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5])
    repo.file_cohort("vip", USERS[:3])
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "uids" / "beta.txt").unlink()
    repo.uids("vip", USERS[:4])
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "cannot read" in out
    assert emulator.members("beta") == USERS[:5] and emulator.members("vip") == USERS[:4]
    code, out, _ = repo.run(capsys, "status", "--format", "json")
    status = {c["id"]: c for c in json.loads(out)["cohorts"]}
    assert status["beta"]["last_status"] == "error" and "cannot read" in status["beta"]["last_error"]


def test_401_stops_the_run_with_a_clear_message(repo, emulator, capsys, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "wrong-key")
    repo.file_cohort("a", USERS[:5])
    repo.file_cohort("b", USERS[:5])
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "HTTP 401" in out and "stopped" in out.lower()
    assert len(emulator.requests()) == 1 and "wrong-key" not in out


def test_cohort_selection(repo, emulator, capsys):
    repo.file_cohort("a", USERS[:5])
    repo.file_cohort("b", USERS[:5])
    assert repo.run(capsys, "apply", "--cohort", "a")[0] == 0
    assert emulator.members("a") == USERS[:5] and emulator.members("b") == []
    code, _, err = repo.run(capsys, "apply", "--cohort", "nope")
    assert code == 1 and "no cohort with id nope" in err


def test_status_and_history(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5])
    assert repo.run(capsys, "apply")[0] == 0
    code, out, _ = repo.run(capsys, "status")
    assert code == 0 and "beta" in out and "converged" in out
    code, out, _ = repo.run(capsys, "history", "--cohort", "beta")
    assert code == 0 and "beta" in out and "converged" in out
    code, out, _ = repo.run(capsys, "history", "--format", "json")
    runs = json.loads(out)["runs"]
    assert runs[0]["sent_adds"] == 5 and runs[0]["requests"] == 1


def test_unchanged_file_cohort_is_not_read_again(repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:5])
    assert repo.run(capsys, "apply")[0] == 0
    # the digest matches, so the plan trusts the state without reading the file's uids
    code, plans = plan_json(repo, capsys)
    assert plans["beta"]["status"] == "unchanged" and plans["beta"]["desired"] == 5


@pytest.mark.postgres
def test_sql_source_in_a_non_c_collation_still_diffs_right(repo, emulator, capsys, request):
    """ORDER BY in an ICU collation puts 'B' after 'a'; the merge diff needs code-point order,
    so the order is checked and the source sorted on our side."""
    url = request.getfixturevalue("postgres_schema")
    engine = sa.create_engine(url)
    mixed = ["alpha", "Beta", "beta", "Zulu", "zulu", "éclair", "Éclair", "a-1", "a_1", "A1", "中文", "10", "9"]
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE people (uid TEXT COLLATE "en-x-icu")')
        conn.execute(sa.text("INSERT INTO people VALUES (:u)"), [{"u": u} for u in mixed])
        ordered = [r[0] for r in conn.exec_driver_sql("SELECT uid FROM people ORDER BY uid")]
    assert ordered != sorted(mixed)  # the database really orders differently
    repo.connect("pg", url)
    repo.spec("p.yaml", "id: p\nname: .P\nsource: {connection: pg, sql: SELECT uid FROM people ORDER BY uid}\n")
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("p") == sorted(mixed)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM people WHERE uid IN ('Beta', '9')")
        conn.exec_driver_sql("INSERT INTO people VALUES ('bravo'), ('Charlie')")
    engine.dispose()
    code, plans = plan_json(repo, capsys)
    assert (plans["p"]["adds"], plans["p"]["removes"]) == (2, 2)
    assert plans["p"]["sample_adds"] == ["Charlie", "bravo"] and plans["p"]["sample_removes"] == ["9", "Beta"]
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("p") == sorted(set(mixed) - {"Beta", "9"} | {"bravo", "Charlie"})
    assert plan_json(repo, capsys, "--detailed-exitcode")[0] == 0


@pytest.mark.parametrize("shape", ["shuffled", "padded", "gz", "csv"])
def test_unsorted_uid_files_diff_right_on_every_sorting_path(repo, emulator, capsys, shape):
    """GNU sort on the raw file, its fallback when stripping breaks the order, and sorting in Python."""
    import gzip
    import random
    uids = [f"user-{i}" for i in range(3000)] + ["Zed", "éclair", "中文", "a b"]
    lines = uids[:]
    random.Random(5).shuffle(lines)
    if shape == "padded":
        lines = [f"  {u}" if i % 7 == 0 else u for i, u in enumerate(lines)] + ["", "user-1"]
    (repo.cohorts / "uids").mkdir(exist_ok=True)
    name = {"shuffled": "u.txt", "padded": "u.txt", "gz": "u.txt.gz", "csv": "u.csv"}[shape]
    body = ("uid\n" if shape == "csv" else "") + "\n".join(lines) + "\n"
    path = repo.cohorts / "uids" / name
    path.write_bytes(gzip.compress(body.encode()) if shape == "gz" else body.encode())
    repo.spec("c.yaml", f"id: c\nname: .C\nsource: {{file: uids/{name}}}\n")
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("c") == sorted(uids)


def test_a_bad_uid_in_an_unsorted_file_names_its_real_line(repo, capsys):
    (repo.cohorts / "uids").mkdir(exist_ok=True)
    (repo.cohorts / "uids" / "u.txt").write_bytes(b"zz\naa\nmm\nb\x01d\ncc\n")
    repo.spec("c.yaml", "id: c\nname: .C\nsource: {file: uids/u.txt}\n")
    code, plans = plan_json(repo, capsys)
    assert code == 1 and plans["c"]["status"] == "error" and "u.txt:4:" in plans["c"]["reason"]


def test_a_uid_too_long_for_any_request_fails_only_its_cohort(tmp_path, emulator, capsys, monkeypatch):
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    repo = Repo(tmp_path, base_url=emulator.url, moengage={"max_payload_bytes": 1024})
    # within MoEngage's 512 characters (a longer uid is refused before sending, not failed), beside a long description
    repo.file_cohort("long", ["ok", "x" * 500], description="d" * 600)
    repo.file_cohort("fine", USERS[:5])
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "cannot fit in a 1024-byte request" in out
    assert emulator.members("fine") == USERS[:5] and emulator.members("long") == []
