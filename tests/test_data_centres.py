"""`moengage.dc`: one of MoEngage's data centres; an unquoted `dc: 1` means 01, never https://api-1.moengage.com."""
from __future__ import annotations

import pytest

from reconciler.common.errors import ConfigError
from reconciler.settings.config import load_settings
from reconciler.settings.model import DATA_CENTRES, data_centre


def config(tmp_path, text: str) -> str:
    path = tmp_path / "cohortsync.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("written, dc", [("1", "01"), ("'1'", "01"), ('"01"', "01"), ("6", "06"), ("'06'", "06"),
                                         ("101", "101"), ("'101'", "101")])
def test_a_data_centre_however_yaml_writes_it(tmp_path, written, dc):
    s = load_settings(config(tmp_path, f"moengage: {{dc: {written}}}\n"), env={})
    assert s.moengage.dc == dc and s.moengage.url == f"https://api-{dc}.moengage.com/v1/integrations/cohortsync"


@pytest.mark.parametrize("value", ["1", "03", "101"])
def test_the_environment_is_normalised_alike(tmp_path, value):
    s = load_settings(config(tmp_path, "{}\n"), env={"MOENGAGE_DC": value})
    assert s.moengage.dc == data_centre(value) and s.moengage.dc in DATA_CENTRES


@pytest.mark.parametrize("written", ["7", "0", "'00'", "'99'", "102", "'eu'", "'1a'", "-1", "'001'"])
def test_an_unknown_data_centre_is_refused_with_the_list(tmp_path, written):
    with pytest.raises(ConfigError) as info:
        load_settings(config(tmp_path, f"moengage: {{dc: {written}}}\n"), env={})
    text = str(info.value)
    assert "cohortsync.yaml: moengage.dc:" in text and "01, 02, 03, 04, 05, 06, 101" in text


def test_an_unknown_data_centre_from_the_environment_names_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(config(tmp_path, "{}\n"), env={"MOENGAGE_DC": "9"})
    assert "moengage.dc" in str(info.value) and "101" in str(info.value)


def test_validate_says_so(tmp_path, capsys):
    from tests.helpers import Repo
    repo = Repo(tmp_path, moengage={"dc": 8})
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "moengage.dc: 8 is not a MoEngage data centre: use one of 01, 02" in err
