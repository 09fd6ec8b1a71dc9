"""`cohortsync init [DIR]`: a new cohorts repository that validates, plans and runs in CI at once.

Like `terraform init` or `flux bootstrap`, it writes the skeleton a team then makes its own. It
never replaces a file the team may have edited unless told to (`--force`), and it names every
file it would have replaced, so a second run is never a silent loss. The files come from the
package (reconciler/cli/assets), which is why the wheel must carry them.
"""
from __future__ import annotations

import argparse
import re
import shutil
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from reconciler import __version__
from reconciler.common.errors import CohortSyncError

ASSETS = resources.files("reconciler.cli.assets")
SCHEMAS = resources.files("reconciler.schema")
_GIT_PIN = re.compile(r"git\+\S+?@v[0-9][\w.]*")  # pip: cohortsync @ git+URL@vX.Y.Z
_HOOK_REPO = re.compile(r"^(\s*- repo: )\S+$", re.M)  # pre-commit: repo: URL
_HOOK_REV = re.compile(r"^(\s*rev: )\S+$", re.M)  # pre-commit: rev: vX.Y.Z


def source_repository() -> str | None:
    """Where this cohortsync's source lives: the Source URL in pyproject.toml, as installed."""
    try:
        urls = metadata.metadata("cohortsync").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    return next((u.split(",", 1)[1].strip() for u in urls if u.startswith("Source,")), None)


def pinned(text: str) -> str:
    """Point the pins in `text` at the cohortsync that runs init: its repository and its release tag.

    A team's CI and hooks then run the very version that wrote them, never a name looked up on PyPI.
    """
    source = source_repository()
    if source is None:
        return text
    text = _GIT_PIN.sub(f"git+{source}@v{__version__}", text)
    return _HOOK_REV.sub(rf"\g<1>v{__version__}", _HOOK_REPO.sub(rf"\g<1>{source}", text))


def skeleton() -> dict[str, str]:
    """Every file of a new cohorts repository: its path in the repository -> its text."""
    init = ASSETS / "init"
    files = {
        "cohortsync.yaml": (init / "cohortsync.yaml").read_text(encoding="utf-8"),
        "cohorts/example.yaml": (init / "example.yaml").read_text(encoding="utf-8"),
        "cohorts/uids/example.txt": (init / "example.txt").read_text(encoding="utf-8"),
        "state/.gitignore": (init / "state.gitignore").read_text(encoding="utf-8"),
        ".pre-commit-config.yaml": pinned((init / "pre-commit-config.yaml").read_text(encoding="utf-8")),
        "README.md": (init / "README.md").read_text(encoding="utf-8"),
    }
    for schema in sorted(SCHEMAS.iterdir(), key=lambda t: t.name):
        if schema.name.endswith(".json"):
            files[f"schema/{schema.name}"] = schema.read_text(encoding="utf-8")
    for workflow in sorted((ASSETS / "workflows").iterdir(), key=lambda t: t.name):
        files[f".github/workflows/{workflow.name}"] = pinned(workflow.read_text(encoding="utf-8"))
    return files


def copy_tree(source: Traversable, dest: Path) -> None:
    """Copy a packaged folder out of the package (a wheel, a zip or a source tree alike), data files only."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name.startswith((".", "__")) or entry.name.endswith(".db"):
            continue
        if entry.is_dir():
            copy_tree(entry, dest / entry.name)
        else:
            with resources.as_file(entry) as path:
                shutil.copyfile(path, dest / entry.name)


def run(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    files = skeleton()
    existing = [name for name in files if (target / name).exists()]
    if existing and not args.force:
        raise CohortSyncError(f"{target} already has {len(existing)} of the files init writes, nothing was written: "
                              f"{', '.join(existing)}. Move them away, or pass --force to replace them")
    for name, text in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text, encoding="utf-8")
    replaced = f" ({len(existing)} replaced)" if existing else ""
    print(f"Wrote a cohorts repository in {target}: {len(files)} files{replaced}.\n")
    for name in files:
        print(f"  {name}")
    where = "" if target.resolve() == Path.cwd().resolve() else f"cd {args.dir} && "
    print(f"\nNext: {where}cohortsync validate && cohortsync plan; then read README.md for CI and the daemon.")
    return 0
