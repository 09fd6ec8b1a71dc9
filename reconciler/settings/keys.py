"""Every config key as one flat list, read off the settings dataclasses (model.py).

The dataclass fields declare the keys; this module only names them by their path
(`moengage.timeout`), so that config.py can map the environment onto them and the README's
table and config.schema.json can be checked against them (tests/test_config.py).
"""
from __future__ import annotations

import dataclasses

from reconciler.settings.model import Key, Settings


def keys_of(cls: type, prefix: str = "") -> list[Key]:
    """The keys a settings dataclass declares, a group's (a nested dataclass) under its name."""
    found: list[Key] = []
    for f in dataclasses.fields(cls):
        if "key" in f.metadata:
            found.append(dataclasses.replace(f.metadata["key"], path=prefix + f.name))
        elif dataclasses.is_dataclass(f.default_factory):
            found.extend(keys_of(f.default_factory, f"{prefix}{f.name}."))  # type: ignore[arg-type]
    return found


KEYS: tuple[Key, ...] = tuple(keys_of(Settings))


def shown_default(key: Key) -> str:
    """The default as the README shows it: as written in YAML, or `none`."""
    if key.default is None or key.default == "":
        return "none"
    text = str(key.default).lower() if isinstance(key.default, bool) else str(key.default)
    return f"`{text}`"


def markdown_table() -> str:
    """The README's table of keys, generated here so that it cannot drift."""
    rows = ["| key | environment | default | type | meaning |", "|---|---|---|---|---|"]
    for key in KEYS:
        kind = f"{key.kind.name}, {key.unit}" if key.unit else key.kind.name
        rows.append(f"| `{key.name}` | `{key.variable}` | {shown_default(key)} | {kind} | {key.doc} |")
    return "\n".join(rows) + "\n"
