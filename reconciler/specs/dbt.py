"""dbt's artifacts: a spec's `dbt_model` resolved to its relation, and the models a dbt run rebuilt.

dbt writes `target/manifest.json` (every node, with the relation it builds) and
`target/run_results.json` (each node's status in the last run). cohortsync reads only the few
fields that have kept their meaning from manifest v10 (dbt 1.6) to v12 (dbt 1.8 and later):
`resource_type`, `name`, `package_name`, `version`, `latest_version`, `relation_name` and
`config.materialized`. A problem becomes one sentence that says what to do; the spec loader
puts it on the spec's `source.dbt_model` field.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.common.errors import CohortSyncError

OLDEST_MANIFEST = 10  # dbt 1.6; older manifests may lack relation_name
_SCHEMA_VERSION = re.compile(r"/manifest/v(\d+)\.json$")
_VERSIONED = re.compile(r"^(.+)\.v(\d+)$")


class DbtError(CohortSyncError):
    """A dbt artifact cannot be used: missing, unreadable, or not what dbt writes."""


@dataclass(frozen=True)
class DbtModel:
    """One model of the manifest: what a spec reads through it."""

    unique_id: str  # model.PACKAGE.NAME[.vN]: what run_results.json names
    name: str
    package: str
    relation: str | None  # database.schema.alias as the adapter quotes it; None when ephemeral
    version: str | None = None
    latest_version: str | None = None
    materialized: str = ""

    @property
    def latest(self) -> bool:
        return self.version is None or self.latest_version is None or self.version == self.latest_version


@dataclass
class Manifest:
    """The models of one manifest.json, by name; `path` for messages."""

    path: Path
    models: list[DbtModel] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        doc = _json(path, "manifest")
        version = _schema_version(doc)
        if version is not None and version < OLDEST_MANIFEST:
            raise DbtError(f"{path} is a dbt manifest v{version}; cohortsync reads v{OLDEST_MANIFEST} and later "
                           "(dbt 1.6+): upgrade dbt, or run `dbt parse` with a newer one")
        nodes = doc.get("nodes")
        if not isinstance(nodes, dict):
            raise DbtError(f"{path} has no `nodes`: is it dbt's target/manifest.json?")
        return cls(path, [_model(uid, node) for uid, node in sorted(nodes.items())
                          if isinstance(node, dict) and node.get("resource_type") == "model"])

    def resolve(self, ref: str) -> DbtModel:
        """NAME (its latest version), NAME.vN, or the unique id model.PACKAGE.NAME[.vN]."""
        by_id = {m.unique_id: m for m in self.models}
        if ref in by_id:
            return self._readable(by_id[ref], ref)
        name, version = ref, None
        versioned = _VERSIONED.match(ref)
        if versioned and any(m.name == versioned.group(1) for m in self.models):
            name, version = versioned.group(1), versioned.group(2)
        found = [m for m in self.models if m.name == name and (m.version == version if version else m.latest)]
        if not found:
            raise DbtError(self._missing(ref, name, version))
        if len(found) > 1:
            raise DbtError(f"{ref!r} names a model in several packages ({', '.join(m.unique_id for m in found)}): "
                           "give the unique id")
        return self._readable(found[0], ref)

    def _readable(self, model: DbtModel, ref: str) -> DbtModel:
        if model.relation is None:
            raise DbtError(f"dbt model {ref!r} is {model.materialized or 'not materialized'} and has no relation to "
                           "read: materialize it as a table or view")
        return model

    def _missing(self, ref: str, name: str, version: str | None) -> str:
        if version is not None:
            have = sorted(f"{m.name}.v{m.version}" for m in self.models if m.name == name)
            return f"dbt model {name!r} has no version {version} in {self.path} (versions: {', '.join(have)})"
        names = sorted({m.name for m in self.models})
        close = difflib.get_close_matches(ref, names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}? (renamed?)" if close else \
            "; run `dbt parse` after adding it, or check dbt.manifest"
        return f"no dbt model {ref!r} in {self.path}{hint}"


def _model(uid: str, node: dict[str, Any]) -> DbtModel:
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    materialized = str(config.get("materialized") or "")
    relation = node.get("relation_name")
    if not relation and materialized != "ephemeral":  # a manifest without relation_name: build it unquoted
        relation = ".".join(str(p) for p in (node.get("database"), node.get("schema"),
                                             node.get("alias") or node.get("name")) if p) or None
    return DbtModel(uid, str(node.get("name") or uid.split(".")[-1]), str(node.get("package_name") or ""),
                    str(relation) if relation else None, _text(node.get("version")),
                    _text(node.get("latest_version")), materialized)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _schema_version(doc: dict[str, Any]) -> int | None:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    m = _SCHEMA_VERSION.search(str(meta.get("dbt_schema_version") or ""))
    return int(m.group(1)) if m else None


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise DbtError(f"dbt {what} {path} not found: run `dbt parse` (or `dbt run`) first, "
                       f"or set {'dbt.manifest (COHORTSYNC_DBT_MANIFEST)' if what == 'manifest' else 'its path'}") from None
    except OSError as exc:
        raise DbtError(f"cannot read dbt {what} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise DbtError(f"dbt {what} {path} is not valid JSON ({exc}); run dbt again") from exc
    if not isinstance(doc, dict):
        raise DbtError(f"dbt {what} {path} is not a JSON object")
    return doc


class Manifests:
    """The manifest at one path, read again only when the file changed (the daemon loads specs every few
    seconds; a big project's manifest is tens of megabytes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._last: Manifest | DbtError | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def changed(self) -> bool:
        """Whether dbt wrote the manifest since it was last read (specs resolved through it are stale);
        False before the first read, when nothing was resolved through it yet."""
        return self._last is not None and self._stamp() != self._seen

    def get(self) -> Manifest:
        """The manifest, or a DbtError saying why there is none."""
        stamp = self._stamp()
        if stamp is None or stamp != self._seen or self._last is None:
            try:
                self._last = Manifest.read(self.path)
            except DbtError as exc:
                self._last = exc
            self._seen = stamp
        if isinstance(self._last, DbtError):
            raise self._last
        return self._last


def rebuilt(path: Path) -> set[str]:
    """The unique ids of the models a dbt run (run_results.json) built with status `success`."""
    doc = _json(path, "run results")
    results = doc.get("results")
    if not isinstance(results, list):
        raise DbtError(f"{path} has no `results` list: is it dbt's target/run_results.json?")
    return {str(r["unique_id"]) for r in results if isinstance(r, dict) and r.get("status") == "success"
            and str(r.get("unique_id", "")).startswith("model.")}


def uid_query(relation: str, column: str | None) -> str:
    """What a dbt_model source runs: the uid column (unquoted, so each warehouse folds it its own way)."""
    return f"SELECT {column or 'uid'} FROM {relation}"


def plain_identifier(column: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", column) is not None
