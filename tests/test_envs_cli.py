"""`retro envs list / tasks / play` through the real command (CliRunner), stdin lines as the player."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from retro.cli import app
from retro.envs import ENVS
from retro.errors import UnknownEnvError

runner = CliRunner()
VIVA = "5a7613c15542994ccc9186bf"


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory):
    return tmp_path_factory.mktemp("envs-cli-home")


@pytest.fixture
def home(retro_home, shared_home, monkeypatch):
    """RETRO_HOME shared by this module's tests, so the corpus is built once."""
    monkeypatch.setenv("RETRO_HOME", str(shared_home))
    return shared_home


def test_every_envs_command_has_help():
    for command in (["envs"], ["envs", "list"], ["envs", "tasks"], ["envs", "play"]):
        result = runner.invoke(app, [*command, "--help"], catch_exceptions=False)
        assert result.exit_code == 0 and "Usage" in result.output


def test_envs_list_shows_splits_counts_and_why_one_fails(home, monkeypatch):
    for name in ("alfworld", "webshop"):  # covered by their own tests; listing them here would unpack games
        monkeypatch.delitem(ENVS, name, raising=False)
    monkeypatch.setitem(ENVS, "broken", "retro.envs.no_such_module:Nope")
    result = runner.invoke(app, ["envs", "list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {(r["env"], r["split"], r["tasks"]) for r in rows if r["status"] == "ok"} == {
        ("hotpotqa", "eval", 100), ("hotpotqa", "train", 98)}
    broken = next(r for r in rows if r["env"] == "broken")
    assert broken["status"].startswith("unavailable: No module named 'retro.envs.no_such_module'")

    table = runner.invoke(app, ["envs", "list"], catch_exceptions=False).output
    assert "hotpotqa" in table and "100" in table and "unavailable" in table


def test_envs_tasks_lists_ids_and_questions(home):
    result = runner.invoke(app, ["envs", "tasks", "hotpotqa", "--split", "eval", "--limit", "3", "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 3 and rows == sorted(rows, key=lambda r: r["task_id"])
    assert set(rows[0]) == {"task_id", "question"}


def test_play_hotpotqa_to_the_answer(home):
    lines = "Search[VIVA Media AG]\nsearch[VIVA Media]\n?\nLookup[2004]\nFly[away]\n" \
            "Finish[Gesellschaft mit beschränkter Haftung]\nnever read\n"
    result = runner.invoke(app, ["envs", "play", "hotpotqa", "--task", VIVA], input=lines,
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Question: VIVA Media AG changed it's name in 2004." in out
    assert "Could not find VIVA Media AG. Similar: ['VIVA Media'" in out  # brackets printed verbatim
    assert "Search[entity]" in out  # `?` shows the action help
    assert "(Result 1 / " in out and "(invalid action)" in out
    assert "Answer is CORRECT" in out and "episode over: return 1, success True" in out


def test_play_stops_on_quit_and_on_eof(home):
    quit_ = runner.invoke(app, ["envs", "play", "hotpotqa", "--task", VIVA, "--split", "eval"],
                          input="Search[VIVA Media]\nquit\n", catch_exceptions=False)
    assert quit_.exit_code == 0 and "VIVA Media GmbH" in quit_.output
    assert quit_.output.rstrip().endswith("stopped")
    eof = runner.invoke(app, ["envs", "play", "hotpotqa", "--task", VIVA], input="", catch_exceptions=False)
    assert eof.exit_code == 0 and eof.output.rstrip().endswith("stopped")


def test_play_unknown_task_is_a_one_line_error(home):
    result = runner.invoke(app, ["envs", "play", "hotpotqa", "--task", "nope", "--split", "train"])
    assert isinstance(result.exception, UnknownEnvError)
    assert "no task 'nope' in hotpotqa split 'train'" in str(result.exception)
    assert "retro envs tasks hotpotqa" in str(result.exception)


def test_play_alfworld_walkthrough(home):
    if importlib.util.find_spec("alfworld") is None:  # not importorskip: the import writes ~/.cache
        pytest.skip("the alfworld extra is not installed: just setup")
    task = "look_at_obj_in_light-AlarmClock-None-DeskLamp-308/trial_T20190908_222917_366542"
    lines = "go to desk 2\n?\ntake alarmclock 1 from desk 2\ngo to desk 1\nuse desklamp 1\n"
    result = runner.invoke(app, ["envs", "play", "alfworld", "--task", task, "--split", "valid_unseen"],
                           input=lines, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Your task is to: examine the alarmclock with the desklamp." in result.output
    assert "admissible now: " in result.output and "take alarmclock 1 from desk 2" in result.output
    assert "episode over: return 1, success True" in result.output
