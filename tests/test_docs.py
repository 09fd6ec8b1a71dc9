"""The documents stay true: every test RELIABILITY.md names as proof exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) for each `tests/x.py::name` and each following `::name`, which means the same file."""
    found, current = [], None
    for ref in re.findall(r"`((?:tests/[\w/]+\.py)?::\w+)(?:\[[^\]]*\])?`", text):
        path, _, name = ref.partition("::")
        current = path or current
        assert current, f"{ref} names no file and follows none"
        found.append((current, name))
    return found


def test_every_proof_in_reliability_md_exists():
    proofs = named_tests((ROOT / "RELIABILITY.md").read_text())
    assert len(proofs) > 40
    missing = [f"{path}::{name}" for path, name in proofs
               if not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE)]
    assert missing == []


def test_every_module_is_in_the_readme_map():
    """The README's module map is how a newcomer finds where a decision lives: it must list every module."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Development"):]
    missing = []
    for path in sorted((ROOT / "reconciler").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        folder = path.parent.name + "/"
        if folder not in section or path.stem not in section:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_every_place_in_where_decisions_live_exists():
    """The README's table of decisions names modules and functions; a rename must update it."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Where decisions live"):]
    places = re.findall(r"`([\w/.]+\.(?:py|json))`(?:: ((?:`\w+`(?:, )?)+))?", table)
    assert len(places) > 10
    missing = []
    for path, names in places:
        file = ROOT / path if path.startswith(("schema/", "tests/", "reconciler/")) else ROOT / "reconciler" / path
        if not file.is_file():
            missing.append(path)
            continue
        missing += [f"{path}: {name}" for name in re.findall(r"`(\w+)`", names or "")
                    if not re.search(rf"^\s*(def|class) {name}\b", file.read_text(), re.MULTILINE)]
    assert missing == []


def test_the_readme_first_screen_shows_three_ways_in():
    """A newcomer sees at once: the clone's make targets, the installed demo, and init for a real team."""
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:45])
    for way in ("make demo", "make test", "pipx install", "cohortsync demo", "cohortsync init"):
        assert way in first_screen, way
