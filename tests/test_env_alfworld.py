"""ALFWorld through the real alfworld package: walkthroughs win, listing tasks loads no game, commands are
normalised, and few-shot examples are the program's own (templates checked here without games)."""

from __future__ import annotations

import importlib.util
import re
import sys
import time

import pytest

from retro.config import load_settings
from retro.envs import alfworld as alf
from retro.envs.base import StepResult, Task
from retro.envs.fewshot import (
    alfworld_plan,
    coherent,
    detour_places,
    empty_handed,
    example_candidates,
    first_target,
    play,
    render,
    scene_parts,
    varied,
)
from retro.errors import UnknownEnvError

# find_spec, not importorskip: importing alfworld creates ~/.cache/alfworld
if importlib.util.find_spec("alfworld") is None:
    pytest.skip("the alfworld extra is not installed: just setup", allow_module_level=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return alf.ALFWorld(load_settings(home=tmp_path_factory.mktemp("alfworld-home"), preset="tiny"))


def _play_walkthrough(environment, task, episode=None):
    episode = episode or environment.start(task)
    try:
        first = episode.reset()
        assert first.rstrip().endswith(f"Your task is to: {task.question}") and "Welcome" not in first
        result = StepResult("", 0.0, False)
        for action in task.metadata["walkthrough"]:
            assert not result.done
            result = episode.step(action)
            assert not result.info["invalid"], action
        return result
    finally:
        episode.close()


def test_listing_tasks_loads_no_game(env, monkeypatch):
    def no_games(*_):
        raise AssertionError("listing tasks must not load a game")

    monkeypatch.setattr(alf, "load_game", no_games)
    started = time.perf_counter()
    tasks = env.load_tasks("valid_unseen")
    assert time.perf_counter() - started < 15  # unpack + read 134 JSON files; no 1-3 s game loads
    assert len(tasks) == 134
    assert [t.task_id for t in tasks] == sorted(t.task_id for t in tasks)
    task = tasks[0]
    assert task.task_id == "look_at_obj_in_light-AlarmClock-None-DeskLamp-308/trial_T20190908_222917_366542"
    assert task.question == "examine the alarmclock with the desklamp."
    assert task.answer == "go to desk 2 | take alarmclock 1 from desk 2 | go to desk 1 | use desklamp 1"
    assert {t.metadata["task_type"] for t in tasks} == set(alf.TASK_TYPES.values())
    assert env.gamefile(task).exists()
    with pytest.raises(UnknownEnvError, match="valid_unseen, valid_train, train"):
        env.load_tasks("test")


def test_unpack_is_reused_and_redone_for_a_new_archive(env, tmp_path):
    folder = env.split_dir("valid_unseen")
    marker = folder / "marker"
    marker.write_text("x")
    assert env.split_dir("valid_unseen") == folder and marker.exists()  # same archive: not unpacked again
    (folder / ".source").write_text("an older archive")
    assert env.split_dir("valid_unseen") == folder and not marker.exists()  # stamp differs: fresh copy
    assert len(list(folder.glob("*/*/game.tw-pddl"))) == 134
    assert not [p for p in folder.parent.parent.iterdir() if p.name.startswith(".")]  # no temp folders


def test_walkthroughs_win_on_a_sample_of_five_played_side_by_side(env):
    """Five games open at once and stepped in turn, as the batched runner does; then one is replayed."""
    argv = list(sys.argv)
    sample = env.load_tasks("valid_unseen")[::27]
    assert len(sample) == 5
    episodes = [env.start(task) for task in sample]
    try:
        for task, episode in zip(sample, episodes):
            assert episode.reset().rstrip().endswith(f"Your task is to: {task.question}")
        results = {}
        for turn in range(max(len(t.metadata["walkthrough"]) for t in sample)):
            for task, episode in zip(sample, episodes):
                if turn < len(task.metadata["walkthrough"]):
                    results[task.task_id] = episode.step(task.metadata["walkthrough"][turn])
                    assert not results[task.task_id].info["invalid"]
        outcomes = {task_id: (r.reward, r.done, r.info["success"]) for task_id, r in results.items()}
        assert set(outcomes.values()) == {(1.0, True, True)}, outcomes
        started = time.perf_counter()
        replay = _play_walkthrough(env, sample[0], episodes[0])  # a reset of a loaded game
        assert replay.reward == 1.0 and time.perf_counter() - started < 10
    finally:
        for episode in episodes:
            episode.close()
    assert sys.argv == argv  # fast_downward's translation overwrites sys.argv; the env puts it back


def test_invalid_commands_and_the_put_alias(env):
    task = next(t for t in env.load_tasks("valid_unseen") if t.metadata["task_type"] == "pick_and_place")
    episode = env.start(task)
    try:
        episode.reset()
        result = episode.step("fly to the moon")
        assert (result.observation, result.reward, result.done) == ("Nothing happens.", 0.0, False)
        assert result.info["invalid"] and "look" in result.info["admissible_commands"]
        walkthrough = task.metadata["walkthrough"]
        for action in walkthrough[:-1]:
            assert not episode.step(f"Action: {action.upper()}.").info["invalid"]  # label, case, full stop
        last = walkthrough[-1]
        assert last.startswith("move ")
        obj, place = last.removeprefix("move ").split(" to ")
        result = episode.step(f"put {obj} in/on {place}")  # ReAct's spelling of "move"
        assert result.reward == 1.0 and result.done and result.info["success"]
        assert episode.step("look").info["invalid"]  # the episode is over
    finally:
        episode.close()


def test_normalize_command():
    assert alf.normalize_command("  Action 3: Go to  Desk 1.\nThought: more") == "go to desk 1"
    assert alf.normalize_command("> take the apple 1 from countertop 2") == "take apple 1 from countertop 2"
    assert alf.normalize_command("") == ""
    # ReAct's `put` is the game's `move`, unless the game has that very `put` command
    assert alf.admissible_spelling("put mug 1 on shelf 2", ["look"]) == "move mug 1 to shelf 2"
    assert alf.admissible_spelling("put mug 1 in cup 1", ["put mug 1 in cup 1"]) == "put mug 1 in cup 1"


def test_fewshot_templates_without_games():
    walkthrough = ["go to countertop 1", "take apple 1 from countertop 1", "go to sinkbasin 1",
                   "clean apple 1 with sinkbasin 1", "go to fridge 1", "open fridge 1",
                   "move apple 1 to fridge 1"]
    assert coherent(walkthrough)
    assert not coherent(["go to drawer 2", "take alarmclock 1 from dresser 1"])
    plan = alfworld_plan("put a clean apple in fridge.", walkthrough)
    assert [a for _, a in plan] == walkthrough
    assert plan[0][0].startswith("My task is to put a clean apple in fridge. ")
    assert plan[2][0] == "Now I take the apple 1 to sinkbasin 1 to clean it there."
    won_step = StepResult("Done.", 1.0, True, {"success": True})
    replies = iter([StepResult("x" * 500, 0.0, False)] * 6 + [won_step])
    steps, won = play(lambda _action: next(replies), plan)
    text = render("Your task is to: put a clean apple in fridge.", steps)
    assert won and text.count("Thought ") == 7 and "Action 7: move apple 1 to fridge 1" in text
    assert "x" * 301 not in text and "Observation 1: " + "x" * 300 + " ..." in text  # long ones are cut


def _game(folder: str, goal: str, walkthrough=("go to desk 1", "take pen 1 from desk 1")):
    return Task("alfworld", "train", f"{folder}/trial_1", goal, "", {"walkthrough": list(walkthrough)})


def test_fewshot_examples_vary_and_look_before_they_know():
    egg = _game("pick_heat_then_place_in_recep-Egg-None-Fridge-13", "put a hot egg in fridge.")
    assert scene_parts(egg) == ("egg", "fridge", "13")
    assert varied(egg, [])
    assert not varied(_game("pick_heat_then_place_in_recep-Egg-None-CounterTop-2", "heat an egg."), [egg])
    assert not varied(_game("pick_heat_then_place_in_recep-Mug-None-CounterTop-13", "heat a mug."), [egg])
    assert not varied(_game("pick_heat_then_place_in_recep-Mug-None-Fridge-2", "heat a mug."), [egg])
    lamp = _game("look_at_obj_in_light-Pen-None-DeskLamp-301", "examine the pen with the desklamp.")
    other = _game("look_at_obj_in_light-Book-None-DeskLamp-302", "examine the book with the desklamp.")
    assert not varied(other, [lamp]) and varied(other, [lamp], strict=False)  # one destination: relaxed
    long = _game("pick_and_place_simple-Pen-None-Desk-1", "x", ["go to desk 1"] * 12)
    order = example_candidates([long, egg, lamp, other], max_steps=10, seed=0)
    assert order[-1] == long and order == example_candidates([other, lamp, egg, long], max_steps=10, seed=0)

    opening = ("You are in the middle of a room. Looking quickly around you, you see a drawer 1, a desk 1, "
               "an armchair 1, and a shelf 2.\n\nYour task is to: examine the pen with the desklamp.")
    walkthrough = ["go to desk 1", "take pen 1 from desk 1", "go to shelf 2", "use desklamp 1"]
    assert first_target(walkthrough) == "pen 1"
    assert detour_places(opening, walkthrough) == ["armchair 1", "drawer 1"]  # unvisited; closed kinds last
    assert empty_handed("You arrive at armchair 1. On the armchair 1, you see a pillow 1.", "pen 1")
    assert not empty_handed("You arrive at armchair 1. On the armchair 1, you see a pen 2.", "pen 1")
    assert not empty_handed("You arrive at drawer 1. The drawer 1 is closed.", "pen 1")
    plan = alfworld_plan("examine the pen with the desklamp.", walkthrough, detour="armchair 1")
    assert [a for _, a in plan] == ["go to armchair 1", *walkthrough]
    assert plan[0][0] == ("My task is to examine the pen with the desklamp. First I need to find a pen. "
                          "I check the places one by one, starting with armchair 1.")
    assert plan[1][0] == "There is no pen at armchair 1. I try desk 1 next."
    assert plan[3][0] == "Now I need a desklamp to see by. I try shelf 2."  # tries, never "the lamp is at"


def test_missing_package_is_one_line_with_the_fix(monkeypatch, tmp_path):
    real = alf.importlib.util.find_spec
    monkeypatch.setattr(alf.importlib.util, "find_spec",
                        lambda name: None if name == "alfworld" else real(name))
    with pytest.raises(UnknownEnvError, match=r"needs the alfworld package: run `just setup`"):
        alf.ALFWorld(load_settings(home=tmp_path, preset="tiny"))


@pytest.mark.slow
def test_few_shot_is_played_from_train_games_of_the_task_type(env):
    kind = "pick_heat_then_place"
    task = next(t for t in env.load_tasks("valid_unseen") if t.metadata["task_type"] == kind)
    text = env.few_shot(task)
    assert text.count("Your task is to: ") == 2 and "heat " in text and "Thought 1: My task is to" in text
    assert "First I need to find a " in text and "There is no " in text  # a first stop that finds nothing
    train_goals = {t.question for t in env.load_tasks("train") if t.metadata["task_type"] == kind}
    prefix = "Your task is to: "
    goals = [ln.removeprefix(prefix) for ln in text.splitlines() if ln.startswith(prefix)]
    assert all(goal in train_goals for goal in goals) and len(set(goals)) == 2
    for other in ("pick_and_place", "pick_two_obj_and_place", "look_at_obj_in_light"):
        shown = env.few_shot(Task("alfworld", "x", "x", "q", "", {"task_type": other}))
        examples = shown.split("\n\nYou are in")
        objects = {re.search(r"First I need to find an? (\w+)", ex).group(1) for ex in examples}
        assert len(examples) == 2 and len(objects) == 2, other  # not alarmclock and apple every time
    cached = list((env.root / "fewshot").glob(f"{kind}-*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == text
    fresh = alf.ALFWorld(env.settings)
    started = time.perf_counter()
    assert fresh.few_shot(task) == text and time.perf_counter() - started < 1  # read from disk, no game loads


@pytest.mark.slow
def test_every_valid_unseen_walkthrough_wins(env):
    lost = [t.task_id for t in env.load_tasks("valid_unseen") if _play_walkthrough(env, t).reward != 1.0]
    assert lost == []
