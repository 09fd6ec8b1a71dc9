"""Shared pieces of the benchmarks: data generation, timing child processes, printing figures.

Every benchmark prints its figure beside a baseline measured in the same run on the same
data, so the ratio means something on a noisy shared machine where absolute seconds do not.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"k": 1_000, "m": 1_000_000}


def size(text: str) -> int:
    """'10M' -> 10_000_000, '250k' -> 250_000, '5000' -> 5000."""
    text = text.strip().lower()
    return int(float(text[:-1]) * SIZES[text[-1]]) if text[-1] in SIZES else int(text)


def parser(description: str, default: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", type=size, default=size(default), help=f"members (default {default}; the target is 10M)")
    p.add_argument("--workdir", type=Path, default=None, help="where to build the data (default: a temp dir)")
    return p


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float  # the process tree's: the child and its helpers (GNU sort, the state reader) together
    output: str


def measure(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Run:
    """Wall time and peak RSS of one child process and everything it starts.

    os.wait4 reports the largest single process's peak RSS (the child's, or a helper's it
    waited for); the sum over the live process tree is sampled every 20 ms, as PSS so that
    pages the processes share (libpython, libc) count once. The figure is the larger of the
    two, so helper processes count in full. Linux starts a child's peak at its parent's
    (fork, then exec), so a benchmark builds its data in a child too and never holds it itself.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            cwd=cwd)
    tree_peak = [0]
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, tree_peak), daemon=True)
    sampler.start()
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    sampler.join()
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) not in (0, 2):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}")
    return Run(seconds, max(usage.ru_maxrss * 1024, tree_peak[0]) / 2**20, out)


def _sample_tree(pid: int, peak: list[int]) -> None:
    """The largest sum of proportional resident memory (PSS) over `pid` and its descendants."""
    while os.path.exists(f"/proc/{pid}/smaps_rollup"):
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
                total += int(rollup.split("\nPss:", 1)[1].split()[0]) * 1024
                for task in Path(f"/proc/{p}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError, IndexError):
                continue  # it ended meanwhile
        peak[0] = max(peak[0], total)
        time.sleep(0.02)


def uid(rng: random.Random, prefix: str = "u") -> str:
    return f"{prefix}{rng.randrange(10**11):011d}"  # 12 characters, as in the figures


def churned(n: int, churn: float, seed: int = 1) -> tuple[list[str], list[str]]:
    """(synced, desired): n sorted uids, and the same with `churn` of them swapped for new ones."""
    rng = random.Random(seed)
    synced = sorted({uid(rng) for _ in range(int(n * 1.001))})[:n]
    k = int(n * churn / 2)
    gone = set(rng.sample(synced, k))
    arrived: set[str] = set()
    while len(arrived) < k:  # at 100M, 500k draws from 10^11 meet a duplicate or so: drawn again
        arrived.add(uid(rng, "v"))
    desired = sorted([u for u in synced if u not in gone] + sorted(arrived))
    return synced, desired


def write_state(path: Path, cohorts: dict[str, list[str]], digests: dict[str, tuple[str, str]] | None = None) -> None:
    """A state database holding these members as synced (written directly: fast, and the same bytes)."""
    from reconciler.state.store import StateStore
    if path.exists():
        path.unlink()
    StateStore.open(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN")
    for cid, uids in cohorts.items():
        db.executemany("INSERT INTO cs_members (cohort_id, uid) VALUES (?, ?)", ((cid, u) for u in uids))
        spec_digest, source_digest = (digests or {}).get(cid, (None, None))
        db.execute("INSERT INTO cs_cohorts (id, name, synced_count, converged, spec_digest, source_digest, last_status)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (cid, f".{cid}", len(uids), digests is not None, spec_digest,
                                                     source_digest, "converged" if digests else None))
    db.commit()
    db.close()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def report(title: str, rows: list[tuple[str, str]], verdicts: list[tuple[str, bool]], *, size: int,
           target: int) -> bool:
    """Print the figures and the verdicts; below the target's size, say the verdicts are only indicative."""
    print(f"\n{title}\n  machine: {machine()}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if size < target:
        print(f"  (the targets are set for --size {target:,}; at this size fixed costs such as start-up weigh "
              "more, so a MISS below says little)")
    for text, ok in verdicts:
        print(f"  [{'PASS' if ok else 'MISS'}] {text}")
    return all(ok for _, ok in verdicts)


def cohortsync(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


@contextmanager
def workspace(p: argparse.ArgumentParser, build: "Callable[[Path, int], None]",
              script: str) -> Iterator[tuple[argparse.Namespace, Path]]:
    """The parsed arguments and a temporary folder holding the benchmark's data.

    The data is built by `script --build DIR` in a child process, so the benchmark itself
    stays small: on Linux a child's peak RSS starts at its parent's, and the figures are the
    children's. In that child this builds and exits.
    """
    p.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build:
        build(args.build, args.size)
        raise SystemExit(0)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        measure([sys.executable, script, "--size", str(args.size), "--build", str(work)])
        yield args, work
