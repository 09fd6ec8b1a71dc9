"""The one decision of which way a cohort's diff runs (planning/paths.py), alone, as a table."""
from __future__ import annotations

import pytest

from reconciler.planning.paths import (COMM, EXTERNAL_SORT, FILE, HELPER, HERE, PYTHON, SORT_FILE, SORT_INTO_COMM,
                                       STREAM, Facts, Path, choose)

BIG, MIN = 2_000_000, 1_000_000


def facts(synced: int = BIG, *, helper_possible: bool = True, tools: bool = True, gnu_sort: bool = True,
          text_file: bool = True, plain_file: bool = True, digest: bool = False) -> Facts:
    return Facts(synced, MIN, helper_possible, tools, gnu_sort, text_file, plain_file, digest)


@pytest.mark.parametrize("given, path", [
    # a big plain UID file with the tools: the helper reads the state, comm reads the file as it is
    (facts(), Path(HELPER, COMM, FILE, SORT_INTO_COMM)),
    # a big cohort whose file needs cleaning (padding, CRLF), or a SQL source: it streams into comm
    (facts(plain_file=False), Path(HELPER, COMM, STREAM, SORT_INTO_COMM)),
    (facts(text_file=False, plain_file=False), Path(HELPER, COMM, STREAM, SORT_INTO_COMM)),
    # a saved plan digests the desired set in order here: an unsorted source is sorted before comm
    (facts(digest=True), Path(HELPER, COMM, FILE, SORT_FILE)),
    (facts(text_file=False, plain_file=False, digest=True), Path(HELPER, COMM, STREAM, EXTERNAL_SORT)),
    # below parallel_plan_min: read here, merged in Python
    (facts(MIN - 1), Path(HERE, PYTHON, STREAM, SORT_FILE)),
    (facts(MIN - 1, text_file=False, plain_file=False), Path(HERE, PYTHON, STREAM, EXTERNAL_SORT)),
    (facts(0, gnu_sort=False), Path(HERE, PYTHON, STREAM, EXTERNAL_SORT)),
    # an in-memory state cannot be shared with a helper, however big
    (facts(helper_possible=False), Path(HERE, PYTHON, STREAM, SORT_FILE)),
    # a helper, but no GNU tools: the Python merge compares what the helper read
    (facts(tools=False, gnu_sort=False), Path(HELPER, PYTHON, STREAM, EXTERNAL_SORT)),
    (facts(tools=False), Path(HELPER, PYTHON, STREAM, SORT_FILE)),
    # exactly at the threshold the helper starts
    (facts(MIN), Path(HELPER, COMM, FILE, SORT_INTO_COMM)),
])
def test_the_diff_path(given: Facts, path: Path) -> None:
    assert choose(given) == path


def test_the_path_reads_as_a_sentence_in_the_log() -> None:
    assert str(choose(facts())) == ("members read helper, compared by comm, source as file; "
                                    "out of order: sort -u into comm")
