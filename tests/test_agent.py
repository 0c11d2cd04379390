"""The agent loop on a toy environment with scripted models: batching, memory, ratings, resume."""

from __future__ import annotations

import json
import re

import pytest
import toyenv

from retro.agent import prompts
from retro.agent.actor import Step, Trajectory, fit_prompt, long_term_memory
from retro.agent.parse import clean_line
from retro.agent.rating import rate_reflections
from retro.agent.request import rollout_request
from retro.envs import ENVS
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")


def run(settings, lake, mode="reflexion", tasks=4, trials=3, models=None, **kw):
    return rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode=mode,
                                                   tasks=tasks, trials=trials, **kw),
                   models=models or toyenv.models())


def test_reflections_that_carry_the_fix_raise_success(settings, lake):
    result = run(settings, lake)
    assert result.success_by_trial == [0.0, 1.0, 1.0]
    trials = lake.read("SELECT task_id, trial, success, memory FROM lake.trials ORDER BY task_id, trial")
    assert trials.height == 8  # 4 tasks x (1 failure + 1 success); solved tasks stop
    second = trials.filter(trials["trial"] == 1)
    assert all(len(json.loads(m)) == 1 for m in second["memory"])
    refl = lake.read("SELECT prompt, text FROM lake.reflections")
    assert refl.height == 4
    assert all(t.startswith("I guessed") and "extra" not in t for t in refl["text"])  # one paragraph kept
    assert all("Previous attempt:" in p for p in refl["prompt"])


def test_success_rate_is_logged_after_each_trial(settings, lake, caplog):
    caplog.set_level("INFO", logger="retro.agent.runner")
    run(settings, lake, tasks=4, trials=3)
    lines = [r.getMessage().split(": ", 1)[1] for r in caplog.records if "success after trial" in r.getMessage()]
    assert lines == ["success after trial 0: 0/4", "success after trial 1: 4/4", "success after trial 2: 4/4"]


def test_react_mode_never_reflects(settings, lake):
    models = toyenv.models()
    models.retro, models.retro_version = None, None
    result = run(settings, lake, mode="react", models=models)
    assert result.success_by_trial == [0.0, 0.0, 0.0]
    assert lake.read("SELECT count(*) FROM lake.reflections").item() == 0
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 12


def test_one_batched_call_per_step_across_episodes(settings, lake):
    models = toyenv.models()
    run(settings, lake, tasks=4, trials=2, models=models)
    # trial 0 for 4 tasks: 1 think + 1 act; 1 reflect call; trial 1: 1 think + 1 act
    assert models.actor.calls == 4
    assert models.retro.calls == 1


def test_ratings_are_exact_return_differences(settings, lake):
    run(settings, lake, trials=3)
    assert rate_reflections(lake, "v1") == 4
    ratings = lake.read("SELECT rating, return_before, return_after FROM lake.ratings")
    assert ratings["rating"].to_list() == [1.0] * 4
    assert rate_reflections(lake, "v1") == 0  # idempotent
    assert rate_reflections(lake, "v2") == 4  # a new label version rates again


def test_rerun_of_a_finished_run_writes_nothing(settings, lake):
    first = run(settings, lake)
    again = run(settings, lake)
    assert first.run_id == again.run_id
    assert again.written == {"trials": 0, "steps": 0, "reflections": 0}
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 8


def test_crash_after_some_trials_resumes_without_duplicates(settings, lake):
    calls = {"n": 0}

    def dying_retro(prompt: str) -> str:
        calls["n"] += 1
        if calls["n"] > 2:  # the retrospective model's process dies during the second batch
            raise KeyboardInterrupt
        return toyenv.retro_policy(prompt)

    with pytest.raises(KeyboardInterrupt):
        run(settings, lake, tasks=4, trials=3, models=toyenv.models(dying_retro))
    # nothing committed for the trials whose reflection batch died: they rerun
    committed = lake.read("SELECT count(*) FROM lake.trials").item()
    assert committed == 0
    result = run(settings, lake, tasks=4, trials=3)
    assert result.success_by_trial == [0.0, 1.0, 1.0]
    keys = lake.read("SELECT run_id, task_id, trial, count(*) n FROM lake.trials GROUP BY ALL")
    assert keys["n"].max() == 1 and keys.height == 8


def test_resume_continues_from_committed_trials(settings, lake):
    # a first run with 1 trial commits trial 0 for every task; K=1 means no reflection
    models = toyenv.models()
    spec_run = run(settings, lake, tasks=3, trials=1, models=models)
    assert spec_run.success_by_trial == [0.0]
    steps_before = lake.read("SELECT count(*) FROM lake.steps").item()
    assert steps_before > 0


def test_junk_actions_are_invalid_steps_not_crashes(settings, lake):
    junk = ScriptedLLM(lambda p: "@@@ I don't know\n", name="junk")
    models = toyenv.models()
    models.actor = junk
    result = run(settings, lake, tasks=2, trials=1, models=models)
    assert result.success_by_trial == [0.0]
    steps = lake.read("SELECT valid, observation FROM lake.steps")
    assert steps.height == 2 * toyenv.ToyEnv.max_steps  # no rollout.max_steps: the environment's
    assert not steps["valid"].any() and set(steps["observation"]) == {toyenv.ToyEnv.invalid_action}
    stops = lake.read("SELECT DISTINCT stop_reason, n_invalid FROM lake.trials")
    assert stops.to_dicts() == [{"stop_reason": "max_steps", "n_invalid": toyenv.ToyEnv.max_steps}]


def test_llm_error_ends_the_run_and_is_never_a_trial(settings, lake):
    """A prompt the backend could not answer (after its retries) is an outage, not a failed trial."""
    from retro.errors import BackendUnreachableError

    class Flaky(ScriptedLLM):
        def generate(self, prompts, params):
            gen = super().generate(prompts, params)
            gen.errors = ["LLM server at x gave no answer" if "code 0." in p[0]["content"] else None for p in prompts]
            return gen

    models = toyenv.models()
    models.actor = Flaky(toyenv.actor_policy)
    with pytest.raises(BackendUnreachableError, match="LLM server at x gave no answer"):
        run(settings, lake, tasks=2, trials=2, models=models)
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 0  # the batch in flight is not committed


def test_context_is_cut_by_dropping_oldest_steps():
    llm = ScriptedLLM(lambda p: "", context_window=60)
    traj = Trajectory("q", [Step(f"thought {i} " * 5, "Look[]", "nothing " * 5) for i in range(6)])
    prompt, dropped = fit_prompt(llm, "instruction", traj, "Thought 7:", max_new_tokens=10)
    assert dropped > 0
    assert llm.count_tokens(prompt) <= 50
    assert "omitted to fit the context" in prompt[1]["content"]


def test_a_trial_longer_than_the_retrospective_window_is_reflected_on_from_its_last_steps(settings, lake):
    from retro.envs import env_class
    from retro.envs.base import reflection_tokens

    def looks_twice(prompt: str) -> str:  # three steps per trial: Look[], Look[], then the answer
        action = re.search(r"Action (\d+):$", prompt)
        return " Look[]\n" if action and int(action.group(1)) < 3 else toyenv.actor_policy(prompt)

    def looking_models():
        models = toyenv.models()
        models.actor = ScriptedLLM(looks_twice, name="scripted-actor")
        return models

    full = run(settings, lake, tasks=1, trials=2, models=looking_models())
    (whole,) = lake.read("SELECT prompt FROM lake.reflections WHERE run_id = ?", [full.run_id])["prompt"]
    assert whole.count("Observation") == 3
    room = reflection_tokens(settings.retrospective.max_new_tokens, [env_class("toy")])
    models = looking_models()
    models.retro.context_window = room + len(whole.split()) - 3  # the whole trajectory no longer fits
    cut = run(settings, lake, tasks=1, trials=2, models=models, tag="small-window")
    assert cut.success_by_trial == full.success_by_trial  # reflected on, not refused
    (prompt,) = lake.read("SELECT prompt FROM lake.reflections WHERE run_id = ?", [cut.run_id])["prompt"]
    assert len(prompt.split()) <= models.retro.context_window - room  # room left for the reflection
    assert prompts.OMITTED_STEPS.format(n=1) in prompt  # the oldest step went, and it says so
    assert prompt.endswith(whole[-200:])  # the last steps and the outcome stay: that is where it failed


def test_memory_keeps_newest_last():
    assert long_term_memory(["a", "b", "c", "d"], 3) == ["b", "c", "d"]
    assert long_term_memory(["a"], 0) == []


def test_clean_line_drops_repeated_labels():
    assert clean_line("Thought 3: I need to search.\nAction 3: x") == "I need to search."


def test_prompt_templates_are_pinned():
    assert prompts.format_memory([]) == ""
    assert prompts.format_memory(["x"]).endswith("Reflection 1: x\n")
    assert prompts.format_step(2, "t", "Search[a]", "o") == "Thought 2: t\nAction 2: Search[a]\nObservation 2: o"


def test_a_different_return_metric_is_a_different_run(settings):
    from retro.agent.spec import make_spec

    models = toyenv.models()
    em = make_spec(settings, models, "reflexion", "hotpotqa", "eval", ["a"], 2)
    settings.rollout.hotpotqa_return = "f1"
    f1 = make_spec(settings, models, "reflexion", "hotpotqa", "eval", ["a"], 2)
    assert em.scoring == "" and f1.scoring == "hotpotqa_return=f1"
    assert em.run_id != f1.run_id
