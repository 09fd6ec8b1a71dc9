"""Start `cohortsync emulator` as a real process on a free loopback port, and talk to it.

The demo, the tests and the benchmarks all use this, so each runs against a real server.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class EmulatorProcess:
    def __init__(self, *args: str, env: dict | None = None, stderr: Path | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "reconciler"), cwd: Path | None = None) -> None:
        """`command` is how to run cohortsync: this interpreter by default, an installed script in a test."""
        cmd = [*command, "emulator", "--port", "0", *args]
        self._stderr = open(stderr, "ab") if stderr else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"emulator did not start (exit {self.proc.wait()}): {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.load(resp)

    def post(self, path: str, payload: dict | None = None) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def edit(self, cohort_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = (),
             workspace: str | None = None) -> None:
        """Change a segment by hand, as someone in the MoEngage dashboard would."""
        query = f"?{urllib.parse.urlencode({'workspace': workspace})}" if workspace is not None else ""
        for method, uids in (("PUT", add), ("DELETE", remove)):
            if uids:
                req = urllib.request.Request(f"{self.url}/_emulator/cohorts/{cohort_id}/members{query}", method=method,
                                             data=json.dumps(list(uids)).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()

    def members(self, cohort_id: str, workspace: str | None = None) -> list[str]:
        """A segment's members (of the one workspace that has that cohort, unless one is named)."""
        query = f"?{urllib.parse.urlencode({'workspace': workspace})}" if workspace is not None else ""
        try:
            return self.get(f"/_emulator/cohorts/{cohort_id}{query}")["members"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def segments(self, workspace: str | None = None) -> dict[str, dict]:
        """Segments by cohort id: of one workspace, or of all (when no two share an id)."""
        query = f"?{urllib.parse.urlencode({'workspace': workspace})}" if workspace is not None else ""
        return {s["cohort_id"]: s for s in self.get(f"/_emulator/cohorts{query}")["cohorts"]}

    def requests(self) -> list[dict]:
        return self.get("/_emulator/requests")["requests"]

    def configure(self, **changes: Any) -> None:
        self.post("/_emulator/config", changes)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
