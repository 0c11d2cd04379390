"""Your own tasks and environments, by setting or by package only (no monkeypatching of retro):
an extra ALFWorld split, a HotPotQA-format JSONL file with its own corpus, and a third-party environment
installed with pip (tests/example_env, the README's worked example) that `retro envs list` finds and the
runner plays."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_env_runner import replay
from typer.testing import CliRunner

from retro.agent.request import rollout_request
from retro.agent.spec import Models
from retro.cli import app
from retro.config import load_settings
from retro.envs import ENVS, get_env
from retro.errors import DataError
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout
from retro.store import Lake

runner = CliRunner()
EXAMPLE = Path(__file__).parent / "example_env"


def cli(*args: str, stdin: str | None = None):
    result = runner.invoke(app, list(args), input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def open_lake(home: Path):
    """Settings as a command would load them (env vars, ./retro.toml), and a fresh lake."""
    settings = load_settings(home=home)
    lake = Lake(settings)
    lake.init()
    return settings, lake


# -- an extra ALFWorld split --------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("alfworld") is None,
                    reason="the alfworld extra is not installed: just setup")
def test_an_alfworld_split_added_by_setting_is_listed_played_and_evaluated(retro_home, tmp_path):
    shipped = get_env("alfworld", load_settings(home=retro_home))
    games = tmp_path / "my-games"  # two games of the shipped valid_unseen split, as a folder of one's own
    for kind in ("pick_cool_then_place", "pick_and_place"):
        task = next(t for t in shipped.load_tasks("valid_unseen") if t.metadata["task_type"] == kind)
        shutil.copytree(shipped.gamefile(task).parent, games / task.task_id)
    Path("retro.toml").write_text(f'[rollout.alfworld_splits]\nmine = "{games}"\n')  # the only change

    rows = json.loads(cli("envs", "list", "--json"))
    assert {"env": "alfworld", "split": "mine", "tasks": 2, "status": "ok"} in rows
    tasks = json.loads(cli("envs", "tasks", "alfworld", "--split", "mine", "--json"))
    task_ids = [row["task_id"] for row in tasks]
    settings, lake = open_lake(retro_home)
    env = get_env("alfworld", settings)
    first = next(t for t in env.load_tasks("mine") if t.task_id == task_ids[0])
    played = cli("envs", "play", "alfworld", "--task", first.task_id, "--split", "mine",
                 stdin="\n".join(first.metadata["walkthrough"]) + "\n")
    assert "episode over: return 1, success True" in played

    plans = {t.question: t.metadata["walkthrough"] for t in env.load_tasks("mine")}
    result = rollout(settings, lake, rollout_request(settings, lake, env="alfworld", split="mine",
                                                     mode="react", trials=1),
                     models=Models(replay(plans), None, None))
    assert result.success_by_trial == [1.0] and result.written["trials"] == 2
    assert lake.read("SELECT count(*) FROM lake.tasks WHERE split = 'mine'").item() == 2


# -- a HotPotQA-format file with its own corpus -------------------------------------------------------------
ZORBLAX = {
    "id": "own-1", "question": "Which river flows through the capital of Zorblax?", "answer": "the Quell",
    "type": "bridge", "level": "easy", "supporting_facts": [["Zorblax", 0], ["Vantor", 1]],
    "context": [["Zorblax", ["Zorblax is a small country.", "Its capital is Vantor."]],
                ["Vantor", ["Vantor is a city of bridges.", "The Quell flows through Vantor."]]],
}


def test_a_hotpotqa_file_added_by_setting_brings_its_own_corpus(retro_home, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps(ZORBLAX) + "\n" + json.dumps({**ZORBLAX, "id": "own-2", "context": []}) + "\n")
    Path("retro.toml").write_text(f'[rollout.hotpotqa_splits]\nmine = "{data}"\n')
    settings, lake = open_lake(retro_home)
    env = get_env("hotpotqa", settings)
    assert env.splits() == {"eval": 100, "train": 98, "mine": 2}
    assert env.wiki_for("mine").page("Vantor") is not None and env.wiki_for("eval").page("Vantor") is None
    settings.rollout.task_ids = ["own-1"]
    plans = {ZORBLAX["question"]: ["Search[Zorblax]", "Search[Vantor]", "Lookup[flows]", "Finish[the Quell]"]}
    result = rollout(settings, lake, rollout_request(settings, lake, env="hotpotqa", split="mine",
                                                     mode="react", trials=1),
                     models=Models(replay(plans), None, None))
    assert result.success_by_trial == [1.0]
    lookup = lake.read("SELECT observation FROM lake.steps WHERE action = 'Lookup[flows]'").item()
    assert lookup == "(Result 1 / 1) The Quell flows through Vantor."

    (tmp_path / "bad.jsonl").write_text('{"id": "x", "question": "q"}\n')
    Path("retro.toml").write_text(f'[rollout.hotpotqa_splits]\nbad = "{tmp_path / "bad.jsonl"}"\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1 has no field 'answer': fix the file or the setting"):
        get_env("hotpotqa", load_settings(home=retro_home)).load_tasks("bad")


# -- a third-party environment from its own package ---------------------------------------------------------
@pytest.fixture
def guess_installed(tmp_path, monkeypatch):
    """tests/example_env pip-installed into a folder on sys.path, as a user's `pip install` would."""
    source, target = tmp_path / "example_env", tmp_path / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    yield target
    sys.modules.pop("retro_guess", None)


def halving_actor() -> ScriptedLLM:
    """Plays guess by halving the range its own trajectory's hints leave (the prompt's last game)."""

    def respond(prompt: str) -> str:
        if re.search(r"Thought \d+:$", prompt):
            return " I halve the range.\n"
        low, high = 1, 100
        mine = prompt[prompt.rfind("from 1 to 100."):]
        for guess, hint in re.findall(r"Action \d+: guess (\d+)\nObservation \d+: (\w+)", mine):
            low, high = (int(guess) + 1, high) if hint == "Higher" else (low, int(guess) - 1)
        return f" I guess {(low + high) // 2}\n"  # not the bare form: the environment finds `guess N`

    return ScriptedLLM(respond, name="halving")


def test_an_installed_environment_is_listed_and_rolled_out(guess_installed, retro_home, monkeypatch):
    for name in ("alfworld", "webshop"):  # listed in their own tests; here they would only cost time
        monkeypatch.delitem(ENVS, name)
    rows = json.loads(cli("envs", "list", "--json"))
    assert {"env": "guess", "split": "eval", "tasks": 20, "status": "ok"} in rows
    lines = "guess 50\nguess 0\nfifty?\n?\nguess 98\n"  # game-01's number is 98
    played = cli("envs", "play", "guess", "--task", "game-01", stdin=lines)
    assert "Higher." in played and "(invalid action)" in played  # 0 is no number of the game
    assert "Invalid action: write guess N" in played and "write `guess N`" in played  # not parsed; `?`
    assert "episode over: return 1, success True" in played

    settings, lake = open_lake(retro_home)
    result = rollout(settings, lake, rollout_request(settings, lake, env="guess", split="eval", mode="react",
                                                     tasks=5, trials=1),
                     models=Models(halving_actor(), None, None))
    assert result.success_by_trial == [1.0]
    steps = lake.read("SELECT action, valid FROM lake.steps")
    assert steps["valid"].all() and all(re.fullmatch(r"guess \d+", a) for a in steps["action"])
    assert lake.read("SELECT max(n_steps) FROM lake.trials").item() <= 7  # the environment's max_steps
