"""Cohort specs: loaded from `cohorts/**/*.yaml`, checked against the schema, then semantically.

Every problem in every file is collected, so one `validate` run shows them all. A spec that
fails to load is reported, never treated as deleted: its members stay as they are.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.common.documents import Document, Problem, parse_yaml, schema_problems
from reconciler.common.errors import SpecError
from reconciler.common.paths import found_outside, read_capped, resolve_inside
from reconciler.common.quoting import shown
from reconciler.settings.model import DEFAULT_WORKSPACE, MoEngageSettings, parse_duration
from reconciler.specs.dbt import DbtError, Manifests, plain_identifier, uid_query
from reconciler.specs.rules import DEFAULT_NAME_RULE, LEADING_PERIOD, has_parentheses, how_to_switch, \
    period_problem, segment_cap_problem

SPEC_GLOBS = ("*.yaml", "*.yml")
FILE_SUFFIXES = (".txt", ".csv", ".txt.gz", ".csv.gz")
MAX_SPEC_BYTES = 1 << 20  # a spec (or a SQL file) is a few lines; anything larger is a mistake, or an attack
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class SourceSpec:
    """Where a cohort's uids come from; paths are resolved and checked already."""

    kind: str  # "sql", "sql_file", "file" or "dbt_model"
    connection: str | None = None
    sql: str | None = None  # the query text, read from sql_file when given, made for a dbt_model
    path: Path | None = None  # sql_file or file, absolute
    column: str | None = None
    model: str | None = None  # a dbt_model's unique id (model.PACKAGE.NAME): what the cohort reads
    relation: str | None = None  # the relation that model builds, from the manifest

    @property
    def reads(self) -> tuple[str, ...]:
        """The dbt models this source reads (the plan says so)."""
        return (self.model,) if self.model else ()


@dataclass(frozen=True)
class MaxRemovals:
    """A guard: at most `count` members, or `percent` of the synced ones, per run."""

    count: int | None = None
    percent: float | None = None

    def limit(self, synced: int) -> int:
        if self.count is not None:
            return self.count
        return int(synced * (self.percent or 0) / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True)
class CohortSpec:
    id: str
    name: str
    source: SourceSpec
    file: str  # the spec file, relative to the cohorts directory, for messages
    description: str | None = None
    mode: str = "mirror"
    schedule: float | None = None  # seconds
    resync: float | None = None  # seconds between the daemon's resyncs of this cohort
    allow_empty: bool = False
    max_removals: MaxRemovals | None = None
    suspended: bool = False
    workspaces: tuple[str, ...] = (DEFAULT_WORKSPACE,)  # where it is synced: one independent sync each
    digest: str = field(default="", compare=False)  # of the spec's content


@dataclass
class SpecSet:
    """The result of loading a cohorts directory: good specs, and every problem found."""

    specs: dict[str, CohortSpec]
    errors: list[SpecError]
    broken: dict[str, str]  # spec file -> the id it most likely has ("" when unknown): never orphaned
    files: int = 0

    @property
    def broken_ids(self) -> set[str]:
        return set(self.broken.values()) - {""}

    @property
    def complete(self) -> bool:
        """True when every spec file loaded: only then may a missing cohort count as deleted."""
        return not self.errors


@dataclass(frozen=True)
class SpecWarning:
    """Something MoEngage may refuse, not known for sure: `validate` and `plan` say it and go on."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: warning: {self.message}" if self.field else f"{self.file}: warning: {self.message}"


def name_rule_errors(spec: CohortSpec, rule: str = DEFAULT_NAME_RULE,
                     workspace: str = DEFAULT_WORKSPACE) -> list[SpecError]:
    """The cohort-name rule of one MoEngage workspace, on one spec (the schema already checked the characters);
    the message names that workspace's setting."""
    problem = period_problem(spec.name, rule)
    if problem is None and rule == LEADING_PERIOD and spec.name == ".":
        problem = "is too short: put a character after the period"
    if problem is None:
        return []
    return [SpecError(spec.file, "name", f"{shown(spec.name)} {problem}: {how_to_switch(rule, workspace)}")]


def name_rules(accounts: Mapping[str, MoEngageSettings]) -> SpecCheck:
    """The check load_specs runs: the name rule of each configured workspace a spec is synced to."""
    def check(spec: CohortSpec) -> list[SpecError]:
        errors: list[SpecError] = []
        for name in spec.workspaces:
            if name in accounts:  # an unknown workspace is an error of its own
                errors += name_rule_errors(spec, accounts[name].name_rule, name)
        return errors
    return check


def name_warnings(spec: CohortSpec) -> list[SpecWarning]:
    if not has_parentheses(spec.name):
        return []
    return [SpecWarning(spec.file, "name", f"{shown(spec.name)} has parentheses, which MoEngage is reported to refuse "
                                           "in cohort names (a partner's documentation says so); rename it to be safe")]


def cap_warnings(cohort_ids: Sequence[str], where: str) -> list[SpecWarning]:
    """The segment cap for the cohorts of one workspace (`where` names it in the warning)."""
    problem = segment_cap_problem(cohort_ids)
    return [SpecWarning(where, "", problem)] if problem else []


def spec_warnings(specs: SpecSet, workspaces: Iterable[str]) -> list[SpecWarning]:
    """Every warning for a set of specs: names, then the segment cap of each workspace."""
    named = [w for spec in sorted(specs.specs.values(), key=lambda s: s.file) for w in name_warnings(spec)]
    capped = [w for name in workspaces for w in cap_warnings(
        [s.id for s in specs.specs.values() if name in s.workspaces], f"workspace {name}")]
    return named + capped


def missing_sources(specs: SpecSet) -> list[SpecError]:
    """UID files that do not exist yet: an error for `validate`; at run time, a source error
    of that cohort alone (reported under its id, its members kept)."""
    return [SpecError(spec.file, "source.file", f"{spec.source.path} does not exist")
            for spec in specs.specs.values() if spec.source.kind == "file" and not spec.source.path.is_file()]


def spec_files(cohorts_dir: Path) -> list[Path]:
    found = {p for pattern in SPEC_GLOBS for p in cohorts_dir.rglob(pattern)}
    return sorted(p for p in found if p.is_file() and not any(part.startswith(".") for part in p.relative_to(cohorts_dir).parts))


SpecCheck = Callable[["CohortSpec"], list[SpecError]]  # a check that needs the operator config (the name rule)


def load_specs(cohorts_dir: Path, connections: Iterable[str], workspaces: Iterable[str] = (DEFAULT_WORKSPACE,),
               check: SpecCheck | None = None, manifests: Manifests | None = None) -> SpecSet:
    """Load and check every spec under `cohorts_dir` against the connections and workspaces configured;
    `check` adds what the operator config says of a spec (name_rules), run on every spec that has a
    name, even one the schema refused; `manifests` resolves `dbt_model` sources (read only if one does)."""
    root = cohorts_dir.resolve()
    specs: dict[str, CohortSpec] = {}
    errors: list[SpecError] = []
    broken: dict[str, str] = {}
    names: dict[str, str] = {}
    if not root.is_dir():
        return SpecSet({}, [SpecError(str(cohorts_dir), "cohorts_dir", "directory not found")], {})
    files = spec_files(root)
    for path in files:
        rel = str(path.relative_to(root))
        refused = found_outside(path, root)
        if refused:  # never opened: not even its id is guessed
            errors.append(SpecError(rel, "", refused))
            broken[rel] = ""
            continue
        spec, problems = load_spec(path, root, set(connections), set(workspaces), check, manifests)
        if spec is not None and spec.id in specs:
            problems.append(Problem("id", f"{shown(spec.id)} is also the id of {specs[spec.id].file}; ids must be unique"))
        if spec is not None and spec.name in names:
            problems.append(Problem("name", f"{shown(spec.name)} is also the name of {names[spec.name]}; "
                                    "names must be unique"))
        if problems:
            errors.extend(SpecError(rel, p.field, p.message, p.line) for p in problems)
            broken[rel] = spec.id if spec else _id_guess(path)
            continue
        assert spec is not None
        specs[spec.id] = spec
        names[spec.name] = rel
    return SpecSet(specs, errors, broken, len(files))


def load_spec(path: Path, root: Path, connections: set[str],
              workspaces: set[str] = frozenset({DEFAULT_WORKSPACE}),
              check: SpecCheck | None = None,
              manifests: Manifests | None = None) -> tuple[CohortSpec | None, list[Problem]]:
    """One spec file (checked to lie inside `root` already): a CohortSpec when it parsed far enough, and
    its problems. A file that fails to parse is never quoted: its problems say where, not what."""
    try:
        raw = read_capped(path.resolve(), MAX_SPEC_BYTES)
        if len(raw) > MAX_SPEC_BYTES:
            size = max(path.stat().st_size, len(raw))
            return None, [Problem("", f"file is {size} bytes; a spec must be under {MAX_SPEC_BYTES}")]
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem("", f"not valid UTF-8 (byte {exc.start})")]
    except OSError as exc:
        return None, [Problem("", f"cannot read: {exc.strerror}")]
    doc, problems = parse_yaml(text)
    if doc is None:
        return None, problems
    if not isinstance(doc.data, dict):
        return None, [Problem("", "a spec must be a YAML mapping with id, name and source", 1)]
    problems += schema_problems(doc, "cohort.schema.json")
    if problems:
        stub = _stub(doc.data, path, root)
        problems += _checked(check, stub, doc)
        return (stub if isinstance(doc.data.get("id"), str) else None), problems
    spec, problems = _build(doc, path, root, connections, workspaces, manifests)
    return spec, problems + _checked(check, spec, doc)


def _checked(check: SpecCheck | None, spec: CohortSpec | None, doc: Document) -> list[Problem]:
    if check is None or spec is None or not spec.name:
        return []
    return [Problem(e.field, e.message, doc.line_of(tuple(e.field.split(".")))) for e in check(spec)]


def _build(doc: Document, path: Path, root: Path, connections: set[str],
           workspaces: set[str], manifests: Manifests | None) -> tuple[CohortSpec | None, list[Problem]]:
    data = doc.data
    problems: list[Problem] = []
    targets = tuple(data.get("workspaces") or (DEFAULT_WORKSPACE,))
    for name in targets:
        if name not in workspaces:
            problems.append(Problem("workspaces", f"no workspace named {shown(name)} in the operator config (known: "
                                    f"{', '.join(sorted(workspaces))})", doc.line_of(("workspaces",))))
    source, source_problems = _source(data["source"], path, root, connections, manifests)
    problems += [Problem(p.field, p.message, doc.line_of(tuple(p.field.split(".")))) for p in source_problems]
    guards = data.get("guards") or {}
    removals = guards.get("max_removals")
    spec = CohortSpec(
        id=data["id"],
        name=data["name"],
        description=data.get("description"),
        source=source or SourceSpec("file"),
        file=str(path.relative_to(root)),
        mode=data.get("mode", "mirror"),
        schedule=parse_duration(data["schedule"]) if "schedule" in data else None,
        resync=parse_duration(data["resync"]) if "resync" in data else None,
        allow_empty=guards.get("allow_empty", False),
        max_removals=_max_removals(removals) if removals is not None else None,
        suspended=data.get("suspended", False),
        workspaces=targets,
        digest=_digest(data, source),
    )
    return spec, problems


def _digest(data: dict, source: SourceSpec | None) -> str:
    """Of the spec's content; a dbt_model's relation too, so a model that now builds elsewhere is a change."""
    content = {**data, "_relation": source.relation} if source is not None and source.relation else data
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _stub(data: dict, path: Path, root: Path) -> CohortSpec:
    """What a spec the schema refused still says: its id, name and workspaces, when they are text."""
    def text(key: str) -> str:
        return data[key] if isinstance(data.get(key), str) else ""
    targets = data.get("workspaces")
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        targets = [DEFAULT_WORKSPACE]
    return CohortSpec(text("id"), text("name"), SourceSpec("file"), str(path.relative_to(root)),
                      workspaces=tuple(targets))


def _max_removals(value: int | str) -> MaxRemovals:
    if isinstance(value, int):
        return MaxRemovals(count=value)
    m = _PERCENT.match(value)
    assert m, "the schema admits only counts and percentages"
    return MaxRemovals(percent=float(m.group(1)))


def _source(src: dict, path: Path, root: Path, connections: set[str],
            manifests: Manifests | None = None) -> tuple[SourceSpec | None, list[Problem]]:
    problems: list[Problem] = []
    if "file" in src:
        if "connection" in src:
            problems.append(Problem("source.connection", "a file source takes no connection; remove it"))
        file, problem = resolve_inside(src["file"], path.parent, root)
        if problem:
            return None, problems + [Problem("source.file", problem)]
        assert file is not None
        if not file.name.lower().endswith(FILE_SUFFIXES):
            problems.append(Problem("source.file", f"{shown(src['file'])} must end in {', '.join(FILE_SUFFIXES)}"))
        if "column" in src and ".csv" not in file.name.lower():
            problems.append(Problem("source.column", "column applies to .csv files only; remove it"))
        return SourceSpec("file", path=file, column=src.get("column")), problems
    if "column" in src and "dbt_model" not in src:
        problems.append(Problem("source.column", "column applies to .csv files only (and to a dbt_model); a "
                                                 "query's first column is the uid"))
    connection = src.get("connection", "default")
    if connection not in connections:
        known = ", ".join(sorted(connections)) or "none"
        problems.append(Problem("source.connection",
                                f"no connection named {shown(connection)} in the operator config (known: {known})"))
    if "dbt_model" in src:
        return _dbt_source(src, connection, manifests, problems)
    if "sql" in src:
        return SourceSpec("sql", connection=connection, sql=src["sql"]), problems
    sql_path, problem = resolve_inside(src["sql_file"], path.parent, root)
    if problem:
        return None, problems + [Problem("source.sql_file", problem)]
    assert sql_path is not None
    try:
        raw = read_capped(sql_path, MAX_SPEC_BYTES)
        if len(raw) > MAX_SPEC_BYTES:
            return None, problems + [Problem("source.sql_file", f"{src['sql_file']!r} is over {MAX_SPEC_BYTES} bytes")]
        sql = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, problems + [Problem("source.sql_file", f"{src['sql_file']!r} is not valid UTF-8 (byte {exc.start})")]
    except OSError as exc:
        return None, problems + [Problem("source.sql_file", f"cannot read {src['sql_file']!r}: {exc.strerror}")]
    if not sql.strip():
        problems.append(Problem("source.sql_file", f"{src['sql_file']!r} is empty"))
    return SourceSpec("sql_file", connection=connection, sql=sql, path=sql_path), problems


def _dbt_source(src: dict, connection: str, manifests: Manifests | None,
                problems: list[Problem]) -> tuple[SourceSpec | None, list[Problem]]:
    """A dbt model, resolved through the manifest to the relation it builds: SELECT its uid column."""
    column = src.get("column")
    if column is not None and not plain_identifier(column):
        return None, problems + [Problem("source.column", f"{shown(column)} is not a plain column name (letters, digits, _)")]
    if manifests is None:
        return None, problems + [Problem("source.dbt_model", "no dbt manifest to resolve it: set dbt.manifest")]
    try:
        model = manifests.get().resolve(src["dbt_model"])
    except DbtError as exc:
        return None, problems + [Problem("source.dbt_model", str(exc))]
    assert model.relation is not None
    return SourceSpec("dbt_model", connection=connection, sql=uid_query(model.relation, column), column=column,
                      model=model.unique_id, relation=model.relation), problems


def _id_guess(path: Path) -> str:
    """The id a broken spec most likely has, so its cohort is not taken for deleted."""
    try:
        for line in read_capped(path.resolve(), MAX_SPEC_BYTES).decode("utf-8", errors="replace").splitlines():
            m = re.match(r"^id:\s*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]*)", line)
            if m:
                return m.group(1)
    except OSError:
        pass
    return ""
