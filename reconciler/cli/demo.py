"""`cohortsync demo [--dir DIR]`: the example cohorts applied to a local emulator, end to end.

It works from any folder, installed from a wheel: the examples ship in the package and are
copied into DIR (./cohortsync-demo) where missing, so edits made there survive the next run. It
builds a small SQLite warehouse in DIR/state/, starts the emulator as a real process with its
segments in DIR/state/emulator.db, plans and applies the example cohorts, and shows the segments
the emulator now holds. Run it again and it has nothing to change. `make demo` runs it on the
repository itself (`--dir .`).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import random
import sqlite3
from pathlib import Path

from reconciler.running.selection import RunOptions
from reconciler.running import render
from reconciler.cli.commands import opened, reconciler_for
from reconciler.cli.scaffold import ASSETS, SCHEMAS, copy_tree
from reconciler.settings.config import load_settings
from reconciler.emulator.process import EmulatorProcess
from reconciler.state.leases import held
from reconciler.settings.model import ConnectionSettings, Secret, Settings

DEMO_WORKSPACE, DEMO_KEY = "DEMO_WORKSPACE", "demo-data-api-key"
CUSTOMERS = 2000


def build_warehouse(path: Path, seed: int = 42) -> None:
    """A deterministic shop: customers with a lifetime value, and their orders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    rng = random.Random(seed)
    db = sqlite3.connect(tmp)
    db.executescript("""
        CREATE TABLE customers (user_id TEXT PRIMARY KEY, email TEXT, lifetime_value REAL);
        CREATE TABLE orders (order_id INTEGER PRIMARY KEY, user_id TEXT, amount REAL, ordered_at TEXT);
    """)
    start = dt.date(2026, 6, 1)
    for i in range(1, CUSTOMERS + 1):
        uid = f"u{i:05d}"
        orders = [round(rng.lognormvariate(3.5, 1.0), 2) for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3, 5]))]
        db.execute("INSERT INTO customers VALUES (?, ?, ?)", (uid, f"{uid}@example.com", round(sum(orders), 2)))
        for amount in orders:
            day = start + dt.timedelta(days=rng.randrange(180))
            db.execute("INSERT INTO orders (user_id, amount, ordered_at) VALUES (?, ?, ?)", (uid, amount, day.isoformat()))
    db.commit()
    db.close()
    tmp.replace(path)


def demo_settings(settings: Settings, url: str, state_dir: Path) -> Settings:
    moengage = dataclasses.replace(settings.moengage, base_url=url, workspace_id=DEMO_WORKSPACE, api_key=Secret(DEMO_KEY))
    connections = {**settings.connections, "warehouse": ConnectionSettings(Secret(f"sqlite:///{state_dir / 'warehouse.db'}"))}
    return dataclasses.replace(settings, moengage=moengage, connections=connections)


def prepare(workspace: Path) -> Path:
    """The demo's folder with the packaged examples copied in where missing; its config file."""
    workspace.mkdir(parents=True, exist_ok=True)
    config = workspace / "cohortsync.yaml"
    if not config.exists():
        config.write_text((ASSETS / "cohortsync.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for name, packaged in (("cohorts", ASSETS / "cohorts"), ("schema", SCHEMAS)):
        if not (workspace / name).exists():  # a whole folder or nothing: a spec deleted there stays deleted
            copy_tree(packaged, workspace / name)
    return config


def run(args: argparse.Namespace) -> int:
    config = prepare(Path(args.dir))
    settings = load_settings(args.config or str(config))
    state_dir = Path(settings.state_url.removeprefix("sqlite:///")).parent if settings.state_url.startswith("sqlite:///") else Path(args.dir) / "state"
    build_warehouse(state_dir / "warehouse.db")
    users = state_dir / "demo_users.txt"
    users.write_text("".join(f"u{i:05d}\n" for i in range(1, CUSTOMERS + 1)))
    with EmulatorProcess("--db", str(state_dir / "emulator.db"), "--users", str(users), "--workspace-id",
                         DEMO_WORKSPACE, "--api-key", DEMO_KEY, "--name-rule", settings.moengage.name_rule,
                         stderr=state_dir / "emulator.log") as emu:
        print(f"MoEngage emulator at {emu.url} (segments in {state_dir / 'emulator.db'})\n")
        settings = demo_settings(settings, emu.url, state_dir)
        with opened(settings) as state, reconciler_for(settings, state) as reconciler:
            specs = reconciler.load()
            plans = reconciler.plan(specs)
            print("== plan\n" + render.plan_text(plans) + "\n")
            with held(state, "demo"):
                report = reconciler.apply(specs, options=RunOptions(trigger="demo"))
            print("== apply\n" + render.report_text(report) + "\n")
        print("== segments in the emulator")
        for seg in emu.segments().values():
            print(f"  {seg['cohort_id']:<20} {seg['cohort_name']:<32} {seg['size']:>6,} members")
    print(f"\nRun `cohortsync demo --dir {args.dir}` again: the plan says there is nothing to change.")
    return 0 if report.ok else 1
