"""Start `cohortsync run` as a real process on a free loopback port."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TOKEN = "daemon-token-abc123"


class DaemonProcess:
    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "reconciler"), cwd: Path | None = None,
                 args: Sequence[str] = ()) -> None:
        full_env = {**os.environ, "COHORTSYNC_LISTEN": "127.0.0.1:0", "COHORTSYNC_TOKEN": TOKEN,
                    "COHORTSYNC_DEBOUNCE": "0.3s", **(env or {})}
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen([*command, "run", "--config", str(config), *args],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=full_env, cwd=cwd)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"daemon did not start: {line!r}\n{self.logs()}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body if method == "POST" else None, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (status, body)
        return json.loads(body)

    def trigger(self, cohort: str | None = None, token: str = TOKEN) -> int:
        path = "/reconcile" + (f"?cohort={cohort}" if cohort else "")
        return self.request("POST", path, headers={"Authorization": f"Bearer {token}"})[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon did not stop within {timeout}s\n{self.logs()}")
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def eventually(check: Callable[[], bool], timeout: float = 15, interval: float = 0.1) -> float:
    """Wait until check() is true; return the seconds it took, fail after `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except (AssertionError, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(interval)
