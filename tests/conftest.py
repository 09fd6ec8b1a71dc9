from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from reconciler.emulator.process import EmulatorProcess
from tests.helpers import Repo

if TYPE_CHECKING:
    from reconciler.state.store import StateStore
    from tests.daemon_process import DaemonProcess

WORKSPACE = "WS_TEST_1234"
API_KEY = "key-s3cr3t-DO-NOT-LOG"


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorProcess]]:
    """A factory: start_emulator('--rate-limit', '5/1s') -> a running emulator process."""
    started: list[EmulatorProcess] = []

    def start(*args: str) -> EmulatorProcess:
        emu = EmulatorProcess(*args)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., EmulatorProcess]) -> EmulatorProcess:
    return start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY)


@pytest.fixture
def repo(tmp_path, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A cohorts repository whose config points at a fresh emulator with the test credentials."""
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    return Repo(tmp_path, base_url=emulator.url)


def postgres_url() -> str:
    return os.environ.get("COHORTSYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_available() -> str | None:
    """None when the server answers; otherwise why not."""
    import sqlalchemy as sa
    try:
        engine = sa.create_engine(postgres_url())
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # any failure to reach it means: skip (or fail in CI)
        return f"PostgreSQL not reachable at {postgres_url()}: {type(exc).__name__}"


def skip_or_fail(reason: str, server: str) -> None:
    """Without the server, skip here; in CI (`CI` or COHORTSYNC_REQUIRE_<SERVER> set), fail: CI claims every database."""
    if os.environ.get(f"COHORTSYNC_REQUIRE_{server}") or os.environ.get("CI"):
        pytest.fail(f"{reason} (mandatory in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_ready() -> None:
    reason = _postgres_available()
    if reason:
        skip_or_fail(reason, "POSTGRES")


@pytest.fixture
def postgres_schema(postgres_ready: None) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards (with `<schema>_snap`, where a test
    keeps warehouse snapshots): tests run in parallel."""
    import uuid

    import sqlalchemy as sa
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{postgres_url()}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}_snap" CASCADE')
        engine.dispose()


MARIADB_URL = os.environ.get("COHORTSYNC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    """A URL to a fresh MariaDB/MySQL database, dropped afterwards (with `<name>_snap`, where a test keeps
    warehouse snapshots); skips when no server answers (fails in CI)."""
    import uuid

    import sqlalchemy as sa
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        engine = sa.create_engine(MARIADB_URL)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    except Exception as exc:  # no server, no driver: either way these tests cannot run here
        skip_or_fail(f"MariaDB/MySQL not reachable at {MARIADB_URL}: {type(exc).__name__}", "MARIADB")
    try:
        yield MARIADB_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}_snap`")
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("postgres_schema")


@pytest.fixture
def state(state_url: str) -> Iterator["StateStore"]:
    """The state store on each backend of the contract suite."""
    from reconciler.state.store import StateStore
    store = StateStore.open(state_url)
    yield store
    store.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test credentials, in this process's environment and as a mapping for child processes."""
    values = {"TEST_WS": WORKSPACE, "TEST_KEY": API_KEY}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def daemons(tmp_path, env: dict[str, str]) -> Iterator[Callable[..., "DaemonProcess"]]:
    """A factory: daemons(repo, **environment) -> a running `cohortsync run` process, each with its own log;
    any still running at the end is killed (a paused one is resumed first, so that it can die)."""
    from tests.daemon_process import DaemonProcess
    started: list[DaemonProcess] = []

    def start(repo: Repo, **extra: str) -> DaemonProcess:
        d = DaemonProcess(repo.config, tmp_path / f"daemon{len(started)}.log", env={**env, **extra})
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)
            d.stop(signal.SIGKILL)
