"""Hostile pull requests: whatever a PR puts under cohorts/ (or in cohortsync.yaml), nothing outside
the repository reaches the plan CI posts, and every case ends as a one-line error with exit code 1.

Each case builds a cohorts repository beside a "runner" folder outside it that holds a planted
secret (a fake service-account JSON with a password, a spec-shaped file, a UID file and a query,
all carrying it), then runs the installed CLI, `cohortsync validate` and
`cohortsync plan --format markdown --out plan.json`, as the plan workflow does. No byte sequence of
the secret, nor any of its substrings of six characters or more that the check samples, may
appear in stdout, stderr or the saved plan.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.common.documents import parse_yaml
from reconciler.common.quoting import shown
from reconciler.specs.cohorts import load_specs

SECRET = "pw-" + secrets.token_hex(12)  # new for every run: nothing can have it by chance
NEEDLES = sorted({SECRET, SECRET[3:], SECRET[:6], SECRET[-6:], SECRET[5:11], SECRET[10:16], SECRET[17:23]})


def cli() -> str:
    found = Path(sys.executable).parent / "cohortsync"
    if found.exists():
        return str(found)
    which = shutil.which("cohortsync")
    if which is None:
        pytest.fail("the cohortsync console script is not installed (make install)")
    return which


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], None]  # (cohorts directory, the runner's folder outside the repository)
    file: str | None  # what the one error line names: a spec file, a config key, or the cohort (a source error)
    says: str  # a phrase of that error
    validate: int = 1  # validate's exit code (it opens no database: config URLs are plan's business)
    config: dict | None = None  # keys of cohortsync.yaml to replace


def write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


def spec(cohorts: Path, source: str, name: str = "victim.yaml") -> None:
    write(cohorts / name, f"id: victim\nname: .Victim\nsource: {source}\n")


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + \
    "id: victim\nname: .Victim\nsource: {file: uids/good.txt}\n"

CASES = [
    Case("spec_symlink_to_credentials", lambda c, r: link(c / "creds.yaml", r / "service-account.json"),
         "creds.yaml", "outside the cohorts directory"),
    Case("spec_symlink_to_a_spec", lambda c, r: link(c / "team" / "stolen.yml", r / "spec.yaml"),
         "team/stolen.yml", "outside the cohorts directory"),
    Case("spec_symlink_chain", lambda c, r: (link(c / "hop.txt", r / "spec.yaml"), link(c / "a.yaml", c / "hop.txt")),
         "a.yaml", "outside the cohorts directory"),
    Case("uid_file_symlink", lambda c, r: (link(c / "uids" / "stolen.txt", r / "uids.txt"),
                                           spec(c, "{file: uids/stolen.txt}")),
         "victim.yaml", "outside the cohorts directory"),
    Case("uid_file_through_a_folder_symlink", lambda c, r: (link(c / "mnt", r), spec(c, "{file: mnt/uids.txt}")),
         "victim.yaml", "outside the cohorts directory"),
    Case("sql_file_symlink", lambda c, r: (link(c / "q.sql", r / "query.sql"),
                                           spec(c, "{sql_file: q.sql, connection: wh}")),
         "victim.yaml", "outside the cohorts directory"),
    Case("dotdot", lambda c, r: spec(c, "{file: ../../runner/uids.txt}"), "victim.yaml", "climbs out with '..'"),
    Case("absolute", lambda c, r: spec(c, f"{{sql_file: '{r / 'query.sql'}', connection: wh}}"),
         "victim.yaml", "is absolute"),
    Case("home", lambda c, r: spec(c, "{sql_file: ~/query.sql, connection: wh}"), "victim.yaml", "is absolute"),
    Case("nul_byte_in_a_path", lambda c, r: spec(c, '{file: "uids/good\\0.txt"}'), "victim.yaml", "NUL byte"),
    Case("billion_laughs", lambda c, r: write(c / "victim.yaml", BOMB), "victim.yaml", "alias bomb"),
    Case("huge_spec", lambda c, r: write(c / "victim.yaml", "id: victim\n# " + "x" * (2 << 20) + "\n"),
         "victim.yaml", "a spec must be under"),
    Case("not_utf8", lambda c, r: write(c / "victim.yaml", b"id: victim\nname: .Caf\xe9\n"),
         "victim.yaml", "not valid UTF-8"),
    Case("nul_byte_in_a_spec", lambda c, r: write(c / "victim.yaml", b"id: victim\nname: .V\x00\n"),
         "victim.yaml", "invalid YAML"),
    Case("python_tag", lambda c, r: write(c / "victim.yaml", "id: !!python/object/apply:os.system "
                                          f"['cat {r / 'service-account.json'}']\nname: .V\n"),
         "victim.yaml", "invalid YAML"),
    Case("typed_value_its_type_refuses", lambda c, r: write(c / "victim.yaml", "id: v\nschedule: !!int soon\n"),
         "victim.yaml", "invalid YAML"),
    Case("duplicate_keys", lambda c, r: write(c / "victim.yaml", "id: victim\nname: .V\nname: .W\n"
                                              "source: {file: uids/good.txt}\n"),
         "victim.yaml", "key appears twice"),
    Case("state_url_unknown_dialect", lambda c, r: None, "state_url", "no SQLAlchemy dialect", validate=0,
         config={"state_url": f"nosuchdb://admin:{SECRET}@db.internal/state"}),
    Case("state_url_bad_port", lambda c, r: None, "state_url", "port is not a number", validate=0,
         config={"state_url": f"postgresql+psycopg://admin:{SECRET}@db.internal:port/state"}),
    Case("state_url_nul_byte", lambda c, r: None, "state_url", "NUL byte", validate=0,
         config={"state_url": "sqlite:///state/cs\0.db"}),
    Case("connection_unknown_dialect", lambda c, r: spec(c, "{sql: SELECT uid FROM t, connection: bad}"),
         "`victim`", "no SQLAlchemy dialect", validate=0,
         config={"connections": {"wh": "sqlite:///wh.db", "bad": f"nosuchdb+x://u:{SECRET}@h/db"}}),
    Case("connection_malformed", lambda c, r: spec(c, "{sql: SELECT uid FROM t, connection: bad}"),
         "`victim`", "port is not a number", validate=0,
         config={"connections": {"wh": "sqlite:///wh.db", "bad": f"postgresql+psycopg://u:{SECRET}@h:p/db"}}),
]


def plant(runner: Path) -> None:
    """The runner's files outside the repository, every one carrying the secret."""
    write(runner / "service-account.json", '{"type": "service_account", "client_email": "ci@example.iam", '
                                           f'"password": "{SECRET}", "private_key": "{SECRET}"}}\n')
    write(runner / "spec.yaml", f"id: stolen\nname: {SECRET}\nsource: {{file: {SECRET}.txt}}\nmode: {SECRET}\n")
    write(runner / "uids.txt", f"{SECRET}\n{SECRET}-2\n")
    write(runner / "query.sql", f"SELECT '{SECRET}' AS uid\n")


def repository(tmp_path: Path, case: Case) -> tuple[Path, Path]:
    root, runner = tmp_path / "repo", tmp_path / "runner"
    plant(runner)
    cohorts = root / "cohorts"
    write(cohorts / "good.yaml", "id: good\nname: .Good\nsource: {file: uids/good.txt}\n")
    write(cohorts / "uids" / "good.txt", "u1\nu2\n")
    with sqlite3.connect(root / "wh.db") as db:
        db.execute("CREATE TABLE t (uid TEXT)")
    config = {"cohorts_dir": "cohorts", "state_url": "sqlite:///state/cs.db",
              "connections": {"wh": "sqlite:///wh.db"}, **(case.config or {})}
    import yaml
    write(root / "cohortsync.yaml", yaml.safe_dump(config))
    case.build(cohorts, runner)
    return root, runner


def run_both(root: Path, runner: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """validate and plan at once (they share nothing): CI's two steps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COHORTSYNC_", "MOENGAGE_"))}
    env["HOME"] = str(runner)  # `~` is the runner's home, where the secret lives
    commands = [[cli(), "validate"], [cli(), "plan", "--format", "markdown", "--out", "plan.json"]]
    procs = [subprocess.Popen(c, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    done = []
    for cmd, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done[0], done[1]


def assert_no_secret(*blobs: bytes) -> None:
    for blob in blobs:
        for needle in NEEDLES:
            assert needle.encode() not in blob, f"{needle!r} of the planted secret leaked: {blob[:2000]!r}"


def one_line(text: str, case: Case) -> str:
    """The single line that names the case's file (or key); it says what the case expects."""
    lines = [line for line in text.splitlines() if case.file in line and case.says in line]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_pull_request_leaks_nothing(tmp_path, case):
    root, runner = repository(tmp_path, case)
    validate, plan = run_both(root, runner)
    saved = (root / "plan.json").read_bytes() if (root / "plan.json").exists() else b""
    assert_no_secret(validate.stdout, validate.stderr, plan.stdout, plan.stderr, saved)
    for result in (validate, plan):
        assert b"Traceback" not in result.stdout + result.stderr, result.stderr.decode(errors="replace")
    v_out, v_err = validate.stdout.decode(), validate.stderr.decode()
    assert validate.returncode == case.validate, v_out + v_err
    if case.validate:
        assert one_line(v_err, case).startswith(case.file + ":")
    out, err = plan.stdout.decode(), plan.stderr.decode()
    assert plan.returncode == 1, out + err
    if case.file == "state_url":  # the state cannot open: no plan at all, one error line
        assert one_line(err, case).startswith("error: state_url: ") and not out and not saved
        assert len(err.strip().splitlines()) == 1, err
    else:  # the hostile cohort is `error` in the comment, the good one is still planned
        assert "| error |" in one_line(out, case)
        assert "| `good` | changed |" in out and saved


def test_a_folder_symlinked_out_is_not_followed(tmp_path):
    """A symlink to a folder outside is never walked: its specs are not found, let alone read."""
    case = Case("folder", lambda c, r: link(c / "team", r), None, "")
    root, runner = repository(tmp_path, case)
    validate, plan = run_both(root, runner)
    assert validate.returncode == 0 and plan.returncode == 0, validate.stderr + plan.stderr
    assert_no_secret(validate.stdout, validate.stderr, plan.stdout, plan.stderr, (root / "plan.json").read_bytes())
    assert b"1 cohort spec(s) valid" in validate.stdout


def test_a_symlink_that_stays_inside_is_read(tmp_path):
    """Refusing links out must not refuse links within: a spec and a UID file linked inside still load."""
    cohorts = tmp_path / "cohorts"
    write(cohorts / "shared" / "real.txt", "u1\n")
    write(cohorts / "shared" / "base.yaml", "id: base\nname: .Base\nsource: {file: real.txt}\n")
    link(cohorts / "alias.txt", cohorts / "shared" / "real.txt")
    write(cohorts / "other.yaml", "id: other\nname: .Other\nsource: {file: alias.txt}\n")
    link(cohorts / "linked" / "copy.yaml", cohorts / "other.yaml")
    specs = load_specs(cohorts, ["default"])
    assert not specs.errors or {e.field for e in specs.errors} == {"id", "name"}  # the copy repeats other's id
    assert set(specs.specs) == {"base", "other"}


@pytest.mark.parametrize("value, quoted", [
    ("maybe", "'maybe'"), ("12345678", "'12345678'"), ("hunter2-db-password", "'hunter2-'…"),
    ("a\x00b", "'a\\x00b'"), (42, "42"), (True, "True"), (None, "None"), (12345678901, "12345678…"),
    ({"k": "v"}, "a mapping"), (["x"], "a list"),
])
def test_values_are_quoted_whole_only_when_short(value, quoted):
    assert shown(value) == quoted


@pytest.mark.parametrize("text, says, hidden", [
    ("a: !!python/object:os.system hunter2secret", "could not determine a constructor for the tag (not shown)",
     "hunter2secret"),
    ("a: *hunter2secret", "found undefined alias (not shown)", "hunter2secret"),
    ("a: [1, 2", "expected ',' or ']', but got '<stream end>' (column 9)", None),
    ("a: 1\n---\nb: hunter2secret\n", "expected a single document in the stream, but found another document", None),
    ('a: "\\xZZ hunter2secret"', "but found (not shown) (column 7)", "ZZ"),
    ("a: !!int hunter2secret", "a value cannot be read as the type", "hunter2secret"),
    ("a: 2026-13-45", "a value cannot be read as the type", "2026"),
    ("a: !!python/name:os.environ", "could not determine a constructor for the tag (not shown)", "environ"),
])
def test_yaml_problems_say_where_and_what_kind_never_what_is_there(text, says, hidden):
    doc, problems = parse_yaml(text)
    assert doc is None and len(problems) == 1
    assert says in problems[0].message
    assert hidden is None or hidden not in problems[0].message


def test_a_huge_sql_file_is_refused_unread_past_the_cap(tmp_path):
    cohorts = tmp_path / "cohorts"
    write(cohorts / "q.sql", "SELECT 1 -- " + "x" * (2 << 20) + "\n")
    write(cohorts / "big.yaml", "id: big\nname: .Big\nsource: {sql_file: q.sql}\n")
    specs = load_specs(cohorts, ["default"])
    assert [(e.file, e.field) for e in specs.errors] == [("big.yaml", "source.sql_file")]
    assert "is over 1048576 bytes" in specs.errors[0].message and "xxxx" not in str(specs.errors[0])
