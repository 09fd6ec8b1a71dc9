"""cohortsync as its users get it: built into an sdist and a wheel, installed into a fresh venv.

Every other test imports the source tree through an editable install, so a module or a data file
left out of the wheel would pass them all and crash for every user. Here the sdist is built from a
clean copy of the repository (its tracked files only), the wheel from that sdist, the wheel is
installed (not editable) into a new venv, and every command a user runs is run from a folder
outside the repository. Any traceback or missing file fails the test.

The build and the venv are made once per session and shared (one xdist group), to keep CI lean.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from reconciler import __version__
from reconciler.emulator.process import EmulatorProcess
from tests.daemon_process import TOKEN, DaemonProcess, eventually

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE, API_KEY = "WS_INSTALLED", "installed-key-DO-NOT-LOG"
BROKEN = re.compile(r"Traceback|No such file or directory|FileNotFoundError|ModuleNotFoundError|ImportError")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("installed")]


def clean_copy(dest: Path) -> Path:
    """The files git tracks (or would: new ones not ignored), as a fresh clone has them; symlinks stay links."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if not src.is_symlink() and not src.exists():  # deleted in the work tree, not yet committed
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


def build(source: Path, out: Path, *kinds: str) -> list[Path]:
    """`python -m build` without isolation: the build backend is the one the test extra installed."""
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", *kinds, "--outdir", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    return sorted(out.iterdir())


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it (as `python -m build` does by default)."""
    base = tmp_path_factory.mktemp("dist")
    built = build(clean_copy(base / "src"), base / "out")
    return {"sdist": next(p for p in built if p.suffixes[-2:] == [".tar", ".gz"]),
            "wheel": next(p for p in built if p.suffix == ".whl")}


@pytest.fixture(scope="session")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel installed as a user installs it; its bin folder."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(dist["wheel"])], check=True, timeout=480)
    return where / "bin"


def user_env(bin_dir: Path, home: Path, **extra: str) -> dict[str, str]:
    """What a user's shell has: the venv first on PATH, no PYTHONPATH, no credentials unless given."""
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


def cli(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str], code: int = 0) -> str:
    """Run the installed `cohortsync`; fail on an unexpected exit code, a traceback or a missing file."""
    done = subprocess.run([str(bin_dir / "cohortsync"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)
    both = done.stdout + done.stderr
    assert done.returncode == code, f"cohortsync {' '.join(args)} exited {done.returncode}:\n{both}"
    assert not BROKEN.search(both), f"cohortsync {' '.join(args)}:\n{both}"
    return done.stdout


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the repository: nothing of the source tree is reachable from here."""
    assert ROOT not in tmp_path.parents
    return tmp_path


def test_the_wheel_holds_every_module_and_data_file(dist: dict[str, Path]):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
    package = ROOT / "reconciler"
    expected = {str(p.relative_to(ROOT)) for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected and expected - names == set()
    assert {"reconciler/schema/cohort.schema.json", "reconciler/schema/config.schema.json"} <= names
    for example in (ROOT / "cohorts").rglob("*"):
        if example.is_file() and example.suffix != ".db":
            assert f"reconciler/cli/assets/cohorts/{example.relative_to(ROOT / 'cohorts')}" in names, example
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(dist["wheel"]) as whl:
        metadata = whl.read(meta).decode()
    for field in ("Summary:", "License-Expression:", "Project-URL:", "Classifier:", "Requires-Python:"):
        assert field in metadata, field
    assert f"Version: {__version__}\n" in metadata


def test_every_command_runs_from_the_installed_wheel(venv: Path, outside: Path):
    env = user_env(venv, outside)
    assert cli(venv, "--version", cwd=outside, env=env).strip() == f"cohortsync {__version__}"
    where = subprocess.run([str(venv / "python"), "-c", "import reconciler; print(reconciler.__file__)"],
                           cwd=outside, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv.parent)), where

    cli(venv, "init", "team", cwd=outside, env=env)
    team = outside / "team"
    cli(venv, "validate", cwd=team, env=env)
    assert "example" in cli(venv, "plan", cwd=team, env=env)

    with EmulatorProcess("--workspace-id", WORKSPACE, "--api-key", API_KEY, stderr=outside / "emulator.log",
                         command=[str(venv / "cohortsync")], env=env, cwd=outside) as emu:
        creds = user_env(venv, outside, MOENGAGE_BASE_URL=emu.url, MOENGAGE_WORKSPACE_ID=WORKSPACE,
                         MOENGAGE_API_KEY=API_KEY, COHORTSYNC_TOKEN=TOKEN)
        assert "converged" in cli(venv, "apply", cwd=team, env=creds)
        assert "example" in cli(venv, "status", cwd=team, env=creds)
        assert "example" in cli(venv, "history", cwd=team, env=creds)
        members = emu.members("example")
        assert members

        uids = team / "cohorts" / "uids" / "example.txt"
        uids.write_text(uids.read_text() + "u-installed-1\n")
        daemon = DaemonProcess(team / "cohortsync.yaml", outside / "daemon.log", env=creds,
                               command=[str(venv / "cohortsync")], cwd=team)
        try:
            eventually(lambda: "u-installed-1" in emu.members("example"), timeout=30)
            assert daemon.request("GET", "/healthz")[0] == 200
            python, *check = healthcheck(daemon.url.rsplit(":", 1)[1])
            assert subprocess.run([str(venv / python), *check], env=env, timeout=30).returncode == 0
            assert "accepted" in cli(venv, "trigger", "--url", daemon.url, cwd=team, env=creds)
        finally:
            assert daemon.stop(signal.SIGTERM) == 0, daemon.logs()
        assert not BROKEN.search(daemon.logs()), daemon.logs()
    assert not BROKEN.search((outside / "emulator.log").read_text())


def test_demo_and_init_from_the_installed_wheel(venv: Path, outside: Path):
    env = user_env(venv, outside)
    first = cli(venv, "demo", cwd=outside, env=env)
    assert "All cohorts converged." in first
    assert (outside / "cohortsync-demo" / "cohorts").is_dir()
    again = cli(venv, "demo", "--dir", "cohortsync-demo", cwd=outside, env=env)
    assert "No changes. MoEngage matches the specs." in again


def healthcheck(port: int | str) -> list[str]:
    """The Dockerfile's own HEALTHCHECK command, aimed at a daemon on `port` instead of 8787."""
    after = (ROOT / "deploy/Dockerfile").read_text().split("HEALTHCHECK", 1)[1]
    argv = json.loads(re.search(r"CMD (\[.*\])$", after, re.M).group(1))
    return [a.replace("8787", str(port)) for a in argv]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dockerfile_copies() -> list[str]:
    """The build-context paths the Dockerfile copies (not those from another stage)."""
    paths = []
    for line in (ROOT / "deploy/Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            paths += [w for w in words[1:-1] if not w.startswith("--")]
    return paths


def test_the_dockerfile_copies_what_exists_and_builds_the_same_wheel(dist: dict[str, Path], venv: Path,
                                                                        tmp_path: Path):
    copies = dockerfile_copies()
    assert copies and [p for p in copies if not (ROOT / p).exists()] == []
    clean, context = clean_copy(tmp_path / "clean"), tmp_path / "context"
    for path in copies:  # the build stage sees only these, as a clean clone has them
        src, dest = clean / path, context / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dest, symlinks=True)
        else:
            shutil.copy2(src, dest, follow_symlinks=False)
    wheel = build(context, tmp_path / "out", "--wheel")[0]
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(dist["wheel"]) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
    text = (ROOT / "deploy/Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert (venv / entry[0]).is_file()
    cli(venv, *entry[1:], *cmd, "--help", cwd=tmp_path, env=user_env(venv, tmp_path))


def image_builder() -> str:
    """buildah (Debian's package) builds and runs an image with no daemon; skip where it or the base image is missing."""
    buildah = shutil.which("buildah")
    if not buildah:
        pytest.skip("no daemonless image builder here (apt-get install buildah); the Dockerfile checks above still ran")
    base = re.search(r"^FROM (\S+)", (ROOT / "deploy/Dockerfile").read_text(), re.M).group(1)
    if subprocess.run([buildah, "inspect", "--type", "image", base], capture_output=True).returncode:
        pulled = subprocess.run([buildah, "pull", "--quiet", base], capture_output=True, text=True, timeout=300)
        if pulled.returncode:
            pytest.skip(f"buildah cannot get the base image {base}: {pulled.stderr.strip().splitlines()[-1]}")
    return buildah


def test_the_image_builds_and_its_daemon_answers_the_healthcheck(tmp_path: Path):
    """The real Dockerfile, built without a Docker daemon; the image's daemon converges and is healthy."""
    buildah = image_builder()
    tag = f"localhost/cohortsync-test:{os.getpid()}"
    subprocess.run([buildah, "bud", "--isolation", "chroot", "--pull=false", "--quiet", "-f", "deploy/Dockerfile",
                    "-t", tag, "."], cwd=ROOT, check=True, capture_output=True, timeout=900)
    container = subprocess.run([buildah, "from", "--pull=false", tag], capture_output=True, text=True,
                               check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "reconciler", "init", str(tmp_path / "repo")], check=True, capture_output=True)
    (tmp_path / "repo").chmod(0o777)  # the image's user (uid 10001) reads the mounted repository
    with EmulatorProcess("--workspace-id", WORKSPACE, "--api-key", API_KEY) as emu:
        port = free_port()
        env = {"COHORTSYNC_LISTEN": f"127.0.0.1:{port}", "MOENGAGE_BASE_URL": emu.url,
               "MOENGAGE_WORKSPACE_ID": WORKSPACE, "MOENGAGE_API_KEY": API_KEY, "COHORTSYNC_TOKEN": TOKEN}
        flags = [f"--env={k}={v}" for k, v in env.items()]
        daemon = subprocess.Popen([buildah, "run", "--isolation", "chroot", *flags,
                                   f"--volume={tmp_path / 'repo'}:/srv/cohortsync/repo", container, "--",
                                   "cohortsync", "run", "--log-format", "json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            eventually(lambda: emu.members("example") == ["u-0001", "u-0002", "u-0003"], timeout=60)
            assert subprocess.run([buildah, "run", "--isolation", "chroot", container, "--", *healthcheck(port)],
                                  capture_output=True, timeout=60).returncode == 0
        finally:
            daemon.kill()  # buildah run does not pass SIGTERM on; the clean stop is tested on the wheel above
            daemon.communicate(timeout=30)
            subprocess.run([buildah, "rm", container], capture_output=True)
            subprocess.run([buildah, "rmi", tag], capture_output=True)
