from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from reconciler.emulator.process import EmulatorProcess

WORKSPACE = "WS_TEST_1234"
API_KEY = "key-s3cr3t-DO-NOT-LOG"


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorProcess]]:
    """A factory: start_emulator('--rate-limit', '5/1s') -> a running emulator process."""
    started: list[EmulatorProcess] = []

    def start(*args: str) -> EmulatorProcess:
        emu = EmulatorProcess(*args)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., EmulatorProcess]) -> EmulatorProcess:
    return start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY)


def postgres_url() -> str:
    return os.environ.get("COHORTSYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
