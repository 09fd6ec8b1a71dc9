"""Building throwaway cohort repositories and running the CLI in-process."""
from __future__ import annotations

import os
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING
from pathlib import Path

import pytest
import yaml

from reconciler.cli.main import main

if TYPE_CHECKING:
    import sqlalchemy as sa

    from reconciler.state.store import StateStore


class Repo:
    """A cohorts directory with its config file, under a temporary folder."""

    def __init__(self, root: Path, *, state_url: str | None = None, base_url: str | None = None,
                 connections: dict | None = None, **config: object) -> None:
        self.root = root
        self.cohorts = root / "cohorts"
        self.cohorts.mkdir(parents=True, exist_ok=True)
        doc: dict = {"cohorts_dir": "cohorts", "state_url": state_url or f"sqlite:///{root / 'state.db'}",
                     "partner": "tests", "moengage": {"max_retries": 2}, **config}
        if base_url:
            doc["moengage"].update(base_url=base_url, workspace_id="${TEST_WS}", api_key="${TEST_KEY}")
        if connections:
            doc["connections"] = connections
        self.config = root / "cohortsync.yaml"
        self.config.write_text(yaml.safe_dump(doc))

    def connect(self, name: str, url: str) -> "Repo":
        """Name a warehouse connection in the config; the repository itself, for chaining."""
        doc = yaml.safe_load(self.config.read_text())
        doc.setdefault("connections", {})[name] = url
        self.config.write_text(yaml.safe_dump(doc))
        return self

    def spec(self, name: str, text: str) -> Path:
        path = self.cohorts / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def file_cohort(self, cid: str, uids: list[str], **extra: object) -> None:
        (self.cohorts / "uids").mkdir(exist_ok=True)
        (self.cohorts / "uids" / f"{cid}.txt").write_text("".join(u + "\n" for u in uids))
        doc = {"id": cid, "name": f".{cid}", "source": {"file": f"uids/{cid}.txt"}, **extra}
        (self.cohorts / f"{cid}.yaml").write_text(yaml.safe_dump(doc))

    def uids(self, cid: str, uids: list[str]) -> None:
        (self.cohorts / "uids" / f"{cid}.txt").write_text("".join(u + "\n" for u in uids))

    def run(self, capsys, *args: str) -> tuple[int, str, str]:
        code = main([args[0], "--config", str(self.config), *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err


def warehouse(path: Path, uids: list[str], table: str = "t") -> tuple[str, "sa.Engine"]:
    """A SQLite warehouse with one table of uids; the caller disposes of the engine."""
    import sqlalchemy as sa
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (uid TEXT)")
        if uids:
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (:u)"), [{"u": u} for u in uids])
    return url, engine


def synced(state: "StateStore", cohort_id: str) -> list[str]:
    """A cohort's synced members from the state, flattened from its chunks."""
    return [uid for chunk in state.synced_chunks(cohort_id) for uid in chunk]


def linter(name: str, package: str) -> str:
    """A linter the test extra installs, by path: skipped where it is missing, mandatory in CI."""
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        if os.environ.get("CI") or os.environ.get("COHORTSYNC_REQUIRE_POSTGRES"):
            pytest.fail(f"{name} is missing (pip install {package}): mandatory in CI")
        pytest.skip(f"{name} is not installed (pip install {package})")
    return found
