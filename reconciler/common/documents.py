"""Reading YAML documents with line numbers, and validating them against our JSON Schemas.

Both the cohort specs and the operator config go through here, so every error names the
file, the field path and, where the YAML says, the line. No error quotes a document that failed
to parse (pyyaml's messages quote the offending line and token: only where is kept), and schema
errors quote a value only as common/quoting.py allows: these messages reach CI's plan comments.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
import yaml

from reconciler.common.quoting import shown, shown_all

MAX_NODES = 10_000  # values a document may hold once its aliases are expanded; a spec holds a few dozen
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_GRAMMAR = {",", "]", "}", ":", " ", "-", "?", "!", "%", "|", ">", "'", '"'}  # pyyaml quotes these as syntax


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
    """Parse one YAML document; problems for bad syntax, several documents, alias bombs or duplicate keys.

    A problem says where (line, column) and what kind, never what the text there holds."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if _expanded_size(root, {}) > MAX_NODES:
            return None, [Problem("", f"invalid YAML: its aliases expand to more than {MAX_NODES} values "
                                      "(an alias bomb?); write the values out", None)]
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (column {mark.column + 1})" if mark else ""
        said = exc.problem or "cannot be parsed"
        if said.startswith("but ") and exc.context:  # "expected a single document in the stream, but found another"
            said = f"{exc.context}, {said}"
        return None, [Problem("", f"invalid YAML: {_unquoted(said)}{where}",
                              mark.line + 1 if mark else None)]
    except yaml.reader.ReaderError as exc:  # a control character or bad encoding
        return None, [Problem("", f"invalid YAML: {exc.reason} (a control character)",
                              text.count("\n", 0, exc.position) + 1)]
    except yaml.YAMLError:
        return None, [Problem("", "invalid YAML: cannot be parsed")]
    except (ValueError, TypeError, OverflowError):  # a tagged or timestamp value its type refuses (!!int abc)
        return None, [Problem("", "invalid YAML: a value cannot be read as the type its tag or form says")]
    except RecursionError:
        return None, [Problem("", "invalid YAML: nested too deeply")]
    return Document(data, root), _duplicate_keys(root)


def _unquoted(problem: str) -> str:
    """pyyaml's problem without what it quotes from the text (a character, a tag, an alias name);
    its grammar (`expected ','`, `'<block end>'`) stays."""
    def keep(m: re.Match[str]) -> str:
        inner = m.group()[1:-1]
        return m.group() if inner in _GRAMMAR or re.fullmatch(r"<[a-z ]+>", inner) else "(not shown)"
    return _QUOTED.sub(keep, problem)


def _expanded_size(node: yaml.Node | None, sizes: dict[int, int]) -> int:
    """How many values the document holds with every alias written out; each node is counted once."""
    if node is None:
        return 0
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_NODES + 1  # a node inside itself (a recursive alias) counts as too many
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    total = 1
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_NODES:
            break
    sizes[id(node)] = total
    return total


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
        path = at = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})), key=str)
            at = (*path, extra[0]) if extra else path  # point at the unknown key itself: its line, and as the
            if extra and str(extra[0]) == shown(extra[0]).strip("'\""):  # field when `shown` would quote it whole
                path = at
        problems.append(Problem(dotted(path), explain(e), doc.line_of(at)))
    return problems


def dotted(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def explain(error: jsonschema.ValidationError) -> str:
    """jsonschema's messages, rephrased where they would puzzle a user; a value only as `shown` quotes it."""
    v, schema, value = error.validator, error.schema, shown(error.instance)
    if v == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(schema.get("properties", {})), key=str)
        return f"unknown key {shown_all(extra)}; allowed keys: {allowed}"
    if v == "required":
        return error.message.replace("is a required property", "is required")  # the schema's key, not a value
    if v == "oneOf" and "sql" in schema.get("properties", {}) and isinstance(error.instance, dict):
        given = [k for k in ("sql", "sql_file", "file", "dbt_model") if k in (error.instance or {})]
        return f"exactly one of sql, sql_file, file, dbt_model is required (found: {', '.join(given) or 'none'})"
    if v == "oneOf" and error.path and error.path[-1] == "max_removals":
        return f"{value} is not a count (0, 1, ...) or a percentage like '10%'"
    if v == "pattern" and "x-pattern-message" in schema:
        return f"{value} {schema['x-pattern-message']}"
    if v == "pattern":
        return f"{value} does not match the required pattern {schema['pattern']}"
    if v == "enum":
        return f"{value} is not one of {', '.join(map(str, schema['enum']))}"
    return _requoted(error.message, error.instance, value)


def _requoted(message: str, instance: Any, value: str) -> str:
    """jsonschema's own message with the instance it quotes (`'x' is not of type ...`) as `shown` quotes it;
    a message that quotes the instance some other way says only what is wrong, not what was there."""
    quoted = repr(instance)
    if message.startswith(quoted):
        return value + message[len(quoted):]
    if isinstance(instance, (str, dict, list)) and instance and quoted in message:
        return message.replace(quoted, value)
    return message
