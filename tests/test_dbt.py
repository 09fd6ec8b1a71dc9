"""dbt models as sources, on the artifacts real dbt wrote for tests/dbt/project (tests/dbt/*.json):
resolution through the manifest, validate's errors, the plan's `reads`, and `dbt trigger`'s choice."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from reconciler.specs.dbt import DbtError, Manifest, Manifests, rebuilt
from tests.dbtproject import FIXTURES
from tests.helpers import Repo

MANIFEST = FIXTURES / "manifest.json"
RUN_RESULTS = FIXTURES / "run_results.json"
PKG = "model.cohortsync_fixture"


def statuses() -> dict[str, str]:
    """What the committed run_results.json says of each node."""
    return {r["unique_id"]: r["status"] for r in json.loads(RUN_RESULTS.read_text())["results"]}


@pytest.mark.parametrize("ref, unique_id, alias", [
    ("active_users", f"{PKG}.active_users", "active_users"),
    ("big_spenders", f"{PKG}.big_spenders", "vip_spenders"),  # config(alias=...): the relation, not the name
    ("buyers", f"{PKG}.buyers.v2", "buyers_v2"),  # a versioned model: its latest version
    ("buyers.v1", f"{PKG}.buyers.v1", "buyers_v1"),
    (f"{PKG}.buyers.v1", f"{PKG}.buyers.v1", "buyers_v1"),
])
def test_a_model_resolves_to_the_relation_it_builds(ref: str, unique_id: str, alias: str) -> None:
    model = Manifest.read(MANIFEST).resolve(ref)
    node = json.loads(MANIFEST.read_text())["nodes"][unique_id]
    assert model.unique_id == unique_id
    assert model.relation == node["relation_name"]
    assert model.relation.endswith(f'"{alias}"')


@pytest.mark.parametrize("ref, words", [
    ("active_user", ["no dbt model 'active_user'", "did you mean 'active_users'"]),
    ("nothing_like_it", ["no dbt model 'nothing_like_it'", "dbt parse"]),
    ("buyers.v3", ["no version 3", "buyers.v1", "buyers.v2"]),
    ("helper", ["ephemeral", "no relation"]),
])
def test_a_missing_renamed_or_unreadable_model_is_explained(ref: str, words: list[str]) -> None:
    with pytest.raises(DbtError) as err:
        Manifest.read(MANIFEST).resolve(ref)
    for word in words:
        assert word in str(err.value)


def test_manifest_versions_from_v10_are_read_and_older_ones_refused(tmp_path: Path) -> None:
    doc = json.loads(MANIFEST.read_text())
    path = tmp_path / "manifest.json"
    for version, readable in ((10, True), (11, True), (12, True), (9, False)):
        doc["metadata"]["dbt_schema_version"] = f"https://schemas.getdbt.com/dbt/manifest/v{version}.json"
        path.write_text(json.dumps(doc))
        if readable:
            assert Manifest.read(path).resolve("active_users").relation
        else:
            with pytest.raises(DbtError, match="v9"):
                Manifest.read(path)


def test_a_broken_manifest_is_one_clear_error(tmp_path: Path) -> None:
    for text, words in (("{not json", "not valid JSON"), ("[]", "not a JSON object"), ("{}", "no `nodes`")):
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(DbtError, match=words):
            Manifest.read(tmp_path / "m.json")
    with pytest.raises(DbtError, match="not found.*dbt.manifest"):
        Manifest.read(tmp_path / "missing.json")


def test_the_manifest_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifests = Manifests(path)
    with pytest.raises(DbtError, match="not found"):
        manifests.get()
    path.write_text(MANIFEST.read_text())
    assert manifests.changed()  # it appeared: what was resolved through it (nothing) is stale
    first = manifests.get()
    assert manifests.get() is first and not manifests.changed()
    doc = json.loads(MANIFEST.read_text())
    doc["nodes"][f"{PKG}.active_users"]["relation_name"] = '"elsewhere"."active_users"'
    path.write_text(json.dumps(doc))
    assert manifests.changed()  # the daemon's spec cache loads the specs again at once
    assert manifests.get().resolve("active_users").relation == '"elsewhere"."active_users"'
    assert not manifests.changed()


def test_only_models_built_with_success_count_as_rebuilt() -> None:
    built = rebuilt(RUN_RESULTS)
    assert built == {uid for uid, status in statuses().items() if status == "success"}
    assert f"{PKG}.active_users" in built
    assert statuses()[f"{PKG}.broken"] == "error" and f"{PKG}.broken" not in built
    assert statuses()[f"{PKG}.after_broken"] == "skipped" and f"{PKG}.after_broken" not in built


def dbt_repo(tmp_path: Path, manifest: Path = MANIFEST, base_url: str | None = None, **specs: str) -> Repo:
    """A repository whose cohorts read dbt models (`cohort=model`), with dbt.manifest set."""
    repo = Repo(tmp_path, connections={"warehouse": f"sqlite:///{tmp_path / 'wh.db'}"},
                dbt={"manifest": str(manifest)}, base_url=base_url)
    for cid, model in specs.items():
        repo.spec(f"{cid}.yaml", f"id: {cid}\nname: .{cid}\nsource:\n  dbt_model: {model}\n  connection: warehouse\n")
    return repo


def test_validate_names_the_file_and_field_of_a_renamed_model(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, active="active_users", renamed="active_user")
    code, out, err = repo.run(capsys, "validate")
    assert code == 1
    lines = [line for line in err.splitlines() if "renamed.yaml" in line]
    assert len(lines) == 1
    assert "source.dbt_model" in lines[0] and "did you mean 'active_users'" in lines[0]
    assert "active.yaml" not in err


def test_validate_says_where_the_manifest_should_be(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, tmp_path / "target" / "manifest.json", active="active_users")
    code, out, err = repo.run(capsys, "validate")
    assert code == 1
    assert "active.yaml" in err and "source.dbt_model" in err and "manifest.json not found" in err


def test_a_uid_column_other_than_uid(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path)
    repo.spec("vip.yaml", "id: vip\nname: .vip\nsource: {dbt_model: big_spenders, connection: warehouse, "
                          "column: 'user_id; drop table x'}\n")
    code, out, err = repo.run(capsys, "validate")
    assert code == 1 and "source.column" in err and "plain column name" in err


def sqlite_manifest(tmp_path: Path) -> Path:
    """The real manifest with each relation moved to SQLite's `main` schema, where a warehouse file has them."""
    doc = json.loads(MANIFEST.read_text())
    db = sqlite3.connect(tmp_path / "wh.db")
    for node in doc["nodes"].values():
        if node.get("relation_name"):
            node["relation_name"] = f'"main"."{node["alias"]}"'
            db.execute(f'CREATE TABLE IF NOT EXISTS "{node["alias"]}" (uid TEXT, user_id TEXT)')
    db.executemany('INSERT INTO "active_users" (uid) VALUES (?)', [("u1",), ("u2",)])
    db.executemany('INSERT INTO "vip_spenders" (user_id) VALUES (?)', [("b1",)])
    db.commit()
    db.close()
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    return path


def test_the_plan_says_which_models_each_cohort_reads(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, sqlite_manifest(tmp_path), active="active_users")
    repo.spec("vip.yaml", "id: vip\nname: .vip\nsource: {dbt_model: big_spenders, connection: warehouse, "
                          "column: user_id}\n")
    repo.file_cohort("plain", ["p1"])
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    assert code == 0
    cohorts = {c["id"]: c for c in json.loads(out)["cohorts"]}
    assert cohorts["active"]["reads"] == [f"{PKG}.active_users"] and cohorts["active"]["adds"] == 2
    assert cohorts["vip"]["reads"] == [f"{PKG}.big_spenders"] and cohorts["vip"]["adds"] == 1
    assert "reads" not in cohorts["plain"]  # added only where there is something to say: other plans keep their shape
    _, text, _ = repo.run(capsys, "plan")
    assert f"reads dbt {PKG}.active_users" in text
    _, markdown, _ = repo.run(capsys, "plan", "--format", "markdown")
    assert f"reads `{PKG}.big_spenders`" in markdown


def test_dbt_trigger_dry_run_names_the_cohorts_of_rebuilt_models(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, active="active_users", buyers="buyers", old_buyers="buyers.v1",
                    broken="broken", skipped="after_broken")
    repo.file_cohort("plain", ["p1"])
    code, out, _ = repo.run(capsys, "dbt", "trigger", "--run-results", str(RUN_RESULTS), "--dry-run")
    assert code == 0
    triggered = {line.split()[2] for line in out.splitlines() if line.startswith("would trigger")}
    assert triggered == {"active", "buyers", "old_buyers"}
    assert "nothing was sent" in out


def test_dbt_trigger_with_nothing_to_trigger_exits_0(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, broken="broken")
    code, out, _ = repo.run(capsys, "dbt", "trigger", "--run-results", str(RUN_RESULTS),
                            "--url", "http://127.0.0.1:9")  # never asked: nothing to trigger
    assert code == 0 and "Nothing to trigger" in out
    results = json.loads(RUN_RESULTS.read_text())
    results["results"] = [r for r in results["results"] if r["status"] != "success"]
    (tmp_path / "run_results.json").write_text(json.dumps(results))
    code, out, _ = repo.run(capsys, "dbt", "trigger", "--run-results", str(tmp_path / "run_results.json"))
    assert code == 0 and "no model built with status success" in out


def test_dbt_trigger_refuses_a_missing_run_results(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, active="active_users")
    code, _, err = repo.run(capsys, "dbt", "trigger", "--run-results", str(tmp_path / "nope.json"))
    assert code == 1 and "nope.json not found" in err and len(err.strip().splitlines()) == 1


def test_dbt_trigger_refuses_a_missing_manifest(tmp_path: Path, capsys) -> None:
    repo = dbt_repo(tmp_path, tmp_path / "target" / "manifest.json", active="active_users")
    code, _, err = repo.run(capsys, "dbt", "trigger", "--run-results", str(RUN_RESULTS), "--dry-run")
    assert code == 1 and "manifest.json not found" in err and len(err.strip().splitlines()) == 1


def test_a_lost_manifest_or_model_keeps_the_members_and_others_go_on(tmp_path: Path, capsys, emulator,
                                                                     env: dict[str, str]) -> None:
    manifest = sqlite_manifest(tmp_path)
    repo = dbt_repo(tmp_path, manifest, emulator.url, active="active_users")
    repo.file_cohort("plain", ["p1"])
    assert repo.run(capsys, "apply")[0] == 0
    members = emulator.members("active")
    assert members
    doc = json.loads(manifest.read_text())
    del doc["nodes"][f"{PKG}.active_users"]  # the model renamed away in dbt
    manifest.write_text(json.dumps(doc))
    repo.uids("plain", ["p1", "p2"])
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "active" in out
    assert emulator.members("active") == members and emulator.members("plain") == ["p1", "p2"]
    manifest.unlink()  # the manifest itself gone
    code, _, _ = repo.run(capsys, "apply", "--force")
    assert code == 1 and emulator.members("active") == members
