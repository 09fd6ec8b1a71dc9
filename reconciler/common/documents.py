"""Reading YAML documents with line numbers, and validating them against our JSON Schemas.

Both the cohort specs and the operator config go through here, so every error names the
file, the field path and, where the YAML says, the line.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
import yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: a dotted field path, a line, a sentence."""

    field: str
    message: str
    line: int | None = None


@dataclass
class Document:
    """A parsed YAML mapping and the node tree that knows where each value stands."""

    data: Any
    root: yaml.Node | None

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The 1-based line of the value at `path`, or of its nearest existing parent."""
        node, line = self.root, None
        if node is not None:
            line = node.start_mark.line + 1
        for key in path:
            node = _child(node, key)
            if node is None:
                break
            line = node.start_mark.line + 1
        return line


def parse_yaml(text: str) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML document; problems for bad syntax, several documents or duplicate keys."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        return None, [Problem("", f"invalid YAML: {exc.problem or exc}", line)]
    except yaml.YAMLError as exc:  # e.g. several documents in one file
        return None, [Problem("", f"invalid YAML: {exc}")]
    return Document(data, root), _duplicate_keys(root)


def _duplicate_keys(node: yaml.Node | None, path: str = "") -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            child = f"{path}.{name}" if path else name
            if name in seen:
                problems.append(Problem(child, "key appears twice; keep one", key.start_mark.line + 1))
            seen.add(name)
            problems.extend(_duplicate_keys(value, child))
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            problems.extend(_duplicate_keys(value, f"{path}[{i}]"))
    return problems


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if str(k.value) == str(key):
                return v
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]
    return None


@functools.cache
def load_schema(name: str) -> dict:
    """A schema shipped inside the package (the same files editors use)."""
    return json.loads(resources.files("reconciler.schema").joinpath(name).read_text(encoding="utf-8"))


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_problems(doc: Document, schema_name: str) -> list[Problem]:
    """Every schema violation as a Problem with a readable message."""
    errors = sorted(_validator(schema_name).iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path)))
    problems = []
    for e in errors:
        path = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})), key=str)
            path = (*path, extra[0]) if extra else path  # point at the unknown key itself
        problems.append(Problem(dotted(path), explain(e), doc.line_of(path)))
    return problems


def dotted(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def explain(error: jsonschema.ValidationError) -> str:
    """jsonschema's messages, rephrased where they would puzzle a user."""
    v, schema = error.validator, error.schema
    if v == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return f"unknown key {', '.join(map(repr, extra))}; allowed keys: {allowed}"
    if v == "required":
        return error.message.replace("is a required property", "is required")
    if v == "oneOf" and "sql" in schema.get("properties", {}) and isinstance(error.instance, dict):
        given = [k for k in ("sql", "sql_file", "file", "dbt_model") if k in (error.instance or {})]
        return f"exactly one of sql, sql_file, file, dbt_model is required (found: {', '.join(given) or 'none'})"
    if v == "oneOf" and error.path and error.path[-1] == "max_removals":
        return f"{error.instance!r} is not a count (0, 1, ...) or a percentage like '10%'"
    if v == "pattern" and "x-pattern-message" in schema:
        return f"{error.instance!r} {schema['x-pattern-message']}"
    if v == "pattern":
        return f"{error.instance!r} does not match the required pattern {schema['pattern']}"
    if v == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, schema['enum']))}"
    return error.message
