"""A broken retro.toml or RETRO_* variable ends every command with one line naming the file or the
variable, and a non-zero exit (issue 29, point 3); before, `retro envs list` printed a table of
per-environment errors and exited 0."""

from __future__ import annotations

from pathlib import Path

import clirun
import pytest

COMMANDS = [["envs", "list"], ["envs", "tasks", "hotpotqa"], ["sql", "SELECT 1"], ["lake", "snapshots"],
            ["models", "list"], ["report"], ["rollout", "--env", "hotpotqa"], ["lake"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_variable_is_one_line_naming_it(retro_home, monkeypatch, command):
    monkeypatch.setenv("RETRO_ROLLOUT__TRIALS", "abc")
    line = clirun.retro(*command).one_line_error
    assert "'rollout.trials'" in line and "fix RETRO_ROLLOUT__TRIALS" in line and "'abc'" in line
    assert not retro_home.exists()  # nothing ran


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_broken_retro_toml_is_one_line_naming_the_file(retro_home, command):
    Path("retro.toml").write_text("[rollout\ntrials = 3\n")  # retro_home chdir'ed to tmp_path
    line = clirun.retro(*command).one_line_error
    assert f"{Path('retro.toml').resolve()} is not valid TOML" in line and "line 1" in line


@pytest.mark.parametrize("toml,expected", [
    ("[rollout]\ntrials = 'x'\n", "bad setting 'rollout.trials' in {path}"),
    ("[rollout]\ntrialz = 3\n", "unknown setting 'rollout.trialz' in {path}: remove it"),
])
def test_a_bad_value_in_retro_toml_names_the_file(retro_home, toml, expected):
    Path("retro.toml").write_text(toml)
    line = clirun.retro("envs", "list").one_line_error
    assert expected.format(path=Path("retro.toml").resolve()) in line


def test_a_section_variable_that_is_not_json_names_it(retro_home, monkeypatch):
    monkeypatch.setenv("RETRO_ROLLOUT", "{bad")
    assert "RETRO_ROLLOUT is not valid JSON" in clirun.retro("envs", "list").one_line_error


def test_help_still_reads_with_broken_settings(retro_home, monkeypatch):
    monkeypatch.setenv("RETRO_ROLLOUT__TRIALS", "abc")
    result = clirun.retro("sql", "--help")
    assert result.code == 0 and "Usage" in result.out
