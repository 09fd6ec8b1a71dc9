"""End to end with real dbt: `dbt run` builds the fixture project's models in PostgreSQL, specs name
them, `apply` syncs them to the emulator, and `dbt trigger` after a partial run reconciles only the
cohorts whose models it rebuilt, on a real daemon. Needs `make integrations-dbt` (skips without it)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import postgres_url
from tests.daemon_process import TOKEN, eventually
from tests.dbtproject import dbt, require_dbt
from tests.helpers import Repo

pytestmark = pytest.mark.postgres


@pytest.fixture
def built(tmp_path: Path, postgres_ready: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A schema of our own in PostgreSQL, the fixture project built in it by real dbt; (schema, its target/)."""
    require_dbt()
    url = sa.engine.make_url(postgres_url())
    for var, value in (("DBT_PGHOST", url.host), ("DBT_PGPORT", url.port), ("DBT_PGUSER", url.username),
                       ("DBT_PGPASSWORD", url.password), ("DBT_PGDATABASE", url.database)):
        if value is not None:
            monkeypatch.setenv(var, str(value))
    schema = f"dbt_{uuid.uuid4().hex[:10]}"
    try:
        dbt(tmp_path / "dbt", schema, "run")
        yield schema, tmp_path / "dbt" / "project" / "target"
    finally:
        engine = sa.create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


def warehouse_uids(schema: str, table: str, column: str = "uid") -> list[str]:
    engine = sa.create_engine(postgres_url())
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f'SELECT {column} FROM "{schema}"."{table}"').fetchall()
    engine.dispose()
    return sorted(r[0] for r in rows)


SOURCES = {"active": "dbt_model: active_users", "buyers": "dbt_model: buyers",
           "vip": "dbt_model: big_spenders, column: user_id"}


def dbt_repo(root: Path, target: Path, emulator_url: str) -> Repo:
    """Three cohorts on the models dbt built; timers an hour away, so only a trigger reconciles them."""
    repo = Repo(root / "repo", base_url=emulator_url, connections={"warehouse": postgres_url()},
                dbt={"manifest": str(target / "manifest.json")})
    for cid, source in SOURCES.items():
        repo.spec(f"{cid}.yaml", f"id: {cid}\nname: .{cid}\nschedule: 1h\nsource: {{{source}, connection: warehouse}}\n")
    return repo


def test_apply_syncs_the_models_dbt_built(tmp_path: Path, built: tuple[str, Path], emulator, env, capsys) -> None:
    schema, target = built
    repo = dbt_repo(tmp_path, target, emulator.url)
    assert repo.run(capsys, "validate")[0] == 0
    code, out, err = repo.run(capsys, "apply")
    assert code == 0, out + err
    assert emulator.members("active") == warehouse_uids(schema, "active_users") != []
    assert emulator.members("buyers") == warehouse_uids(schema, "buyers_v2") != []  # the latest version
    assert emulator.members("vip") == warehouse_uids(schema, "vip_spenders", "user_id") != []  # the alias
    code, out, _ = repo.run(capsys, "plan")
    assert code == 0 and "No changes" in out and "reads dbt model.cohortsync_fixture.buyers.v2" in out


def test_dbt_trigger_reconciles_only_the_cohorts_of_rebuilt_models(tmp_path: Path, built: tuple[str, Path],
                                                                   emulator, env, daemons, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    schema, target = built
    repo = dbt_repo(tmp_path, target, emulator.url)
    daemon = daemons(repo)
    eventually(lambda: all(emulator.members(c) for c in ("active", "buyers", "vip")), timeout=30)
    idle(daemon)
    engine = sa.create_engine(postgres_url())
    with engine.begin() as conn:  # a change no dbt run made: only a reconcile of `buyers` would send it
        conn.exec_driver_sql(f"INSERT INTO \"{schema}\".buyers_v2 VALUES ('new9')")
    engine.dispose()
    dbt(tmp_path / "dbt", schema, "run", "--select", "active_users", "--vars", "{more: true}")
    assert "u4" in warehouse_uids(schema, "active_users")

    monkeypatch.setenv("COHORTSYNC_TOKEN", TOKEN)
    code, out, err = repo.run(capsys, "dbt", "trigger", "--run-results", str(target / "run_results.json"),
                              "--url", daemon.url, "--wait", "--timeout", "60")
    assert code == 0, out + err  # --wait: 0 once the run converged
    assert "triggering active (reads model.cohortsync_fixture.active_users)" in out
    assert "buyers" not in out.replace("triggering active", "") and "vip" not in out
    assert emulator.members("active") == warehouse_uids(schema, "active_users")  # done when --wait returned
    idle(daemon)
    assert "new9" not in emulator.members("buyers")
    assert daemon.trigger("buyers") == 202  # the control: a reconcile of buyers does send it
    eventually(lambda: "new9" in emulator.members("buyers"), timeout=30)
    assert daemon.stop() == 0


def idle(daemon) -> None:
    """Wait until the daemon has nothing queued or running."""
    eventually(lambda: (lambda s: s["queue"] is None and s["running"] is None)(daemon.get_json("/status")),
               timeout=30)

