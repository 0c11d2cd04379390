# ruff: noqa: F811 (fixtures imported from trainkit come back as test arguments)
"""What people watching Prefect's UI see: progress lines in the run log while a task runs, the artifacts a
night publishes, and a night on default settings that learns. Real Prefect engine (the session's test
API), read back through Prefect's client; scripted models on the toy environment, real trainers."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import pytest
import toyenv
from hypothesis import given, settings
from hypothesis import strategies as st
from test_branches import sampled_retro
from trainkit import tiny_model_dir  # noqa: F401 (fixture)

from retro.agent.spec import Models
from retro.envs import ENVS
from retro.llm.scripted import ScriptedLLM


@pytest.fixture
def harness(prefect_harness):
    """The session's temporary Prefect API (tests/conftest.py)."""


@pytest.fixture
def served_logging(monkeypatch):
    """The `retro` loggers as a served deployment's flow-run process has them: no Prefect handler (Prefect was
    imported before flows/ could ask for one) and the root's WARNING level."""
    retro_logger, root = logging.getLogger("retro"), logging.getLogger()
    monkeypatch.setattr(retro_logger, "handlers", [])
    levels = retro_logger.level, root.level
    retro_logger.setLevel(logging.NOTSET)
    root.setLevel(logging.WARNING)
    yield
    retro_logger.setLevel(levels[0])
    root.setLevel(levels[1])


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def run_logs(flow_run_id: str) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with client() as c:
        return [log.message for log in c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                                    limit=200)]


def artifacts_of(flow_run_id: str) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as c:
        found = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


# -- artifacts are text -------------------------------------------------------------------------------------
@settings(deadline=None)  # the first example imports Prefect
@given(st.text())
def test_a_markdown_cell_shows_any_text_as_written(value):
    """Model output in an artifact's table renders as its own text: no markup, HTML, entity or extra cell."""
    import markdown_it

    from flows.artifacts import table

    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    cells = [tok for tok in md.parse(table([{"reflection": value, "n": 1}])) if tok.type == "inline"]
    assert [c.content for c in cells[:2]] == ["reflection", "n"]  # the header, then exactly two cells
    assert len(cells) == 4 and cells[3].content == "1"
    assert {child.type for child in cells[2].children} <= {"text"}
    shown = "".join(child.content for child in cells[2].children)
    expected = re.sub(r"\r\n|\r|\n", " ⏎ ", value).replace("\x00", "\ufffd")
    assert shown.strip() == expected.strip()  # as written, on one line, up to the whitespace a cell trims


# -- progress while a task runs ------------------------------------------------------------------------------
def test_rollout_progress_reaches_the_run_log_while_the_task_still_runs(harness, served_logging, monkeypatch,
                                                                        lake):
    """Round 0 finishes, the actor then waits: the log read through Prefect's client already holds the
    round's success and the progress line with tok/s, before the task is done."""
    import retro.agent.spec as spec_module
    from flows.rollout import rollout_flow

    second_round, go_on, flow_run = threading.Event(), threading.Event(), {}

    def actor(prompt: str) -> str:
        if "Reflection 1:" in prompt and not go_on.is_set():  # trial 1 started: round 0 is over and logged
            from prefect.runtime import flow_run as current

            flow_run["id"] = current.id
            second_round.set()
            go_on.wait(timeout=120)
        return toyenv.actor_policy(prompt)

    def load_models(settings, request):
        return Models(ScriptedLLM(actor, name="scripted-actor"), ScriptedLLM(toyenv.retro_policy, name="scripted-retro"),
                      "base")

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", load_models)
    result = {}
    runner = threading.Thread(target=lambda: result.update(rollout_flow(env="toy", split="train", mode="reflexion",
                                                                        tasks=3, trials=2, tag="progress")))
    runner.start()
    try:
        assert second_round.wait(timeout=120), "the rollout never reached its second round"
        deadline, lines = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            lines = run_logs(flow_run["id"])
            if any("success after trial 0: 0/3" in line for line in lines) and any("tok/s" in line for line in lines):
                break
            time.sleep(1)
        assert runner.is_alive()  # read while the task was still running
    finally:
        go_on.set()
        runner.join(timeout=120)
    assert any(re.search(r"success after trial 0: 0/3", line) for line in lines), lines
    progress = [line for line in lines if "tasks solved so far" in line]
    assert progress and re.search(r"rollout reflexion toy/train: 3 of at most 6 episodes, 0/3 tasks solved so far, "
                                  r"[\d.]+ tok/s", "\n".join(progress)), lines
    assert result["success_by_trial"] == [0.0, 1.0]
    final, deadline = run_logs(flow_run["id"]), time.monotonic() + 60
    while not any("success after trial 1: 3/3" in line for line in final) and time.monotonic() < deadline:
        time.sleep(1)  # Prefect ships run logs in batches, a moment after they are written
        final = run_logs(flow_run["id"])
    assert any("success after trial 1: 3/3" in line for line in final), final  # the next round, once it finished


# -- a night on default settings ------------------------------------------------------------------------------
def branch_models(settings, request) -> Models:
    """The scripted world where branches differ: the greedy reflection names a wrong word, sampled ones the
    right word for even seeds (tests/test_branches.py), and the actor answers with the word it was told."""
    retro = ScriptedLLM(sampled_retro, name="scripted-retro", seeded=True)
    return Models(ScriptedLLM(toyenv.actor_policy, name="scripted-actor"), retro,
                  request.adapter if request.mode == "retroformer" else "base")


@pytest.mark.slow  # about 2 minutes: SFT, reward model and PPO on a tiny model, then the evaluation
def test_a_default_night_rates_branches_apart_trains_and_publishes_what_it_did(harness, monkeypatch, lake,
                                                                             tiny_model_dir, tmp_path):
    """On a fresh home with the night's default settings (nothing about branches or returns set), the
    nightly flow samples reflections per failure, rates them apart, trains SFT and the reward model, and
    publishes its artifacts; the evaluation plays one reflection per failure."""
    import retro.agent.spec as spec_module
    from flows.artifacts import text
    from flows.nightly import nightly_flow
    from retro.config import load_settings
    from retro.eval.report import plot_training, read_report_data
    from retro.store.registry import get_model_version

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", branch_models)
    sizes = {"retrospective": {"model": str(tiny_model_dir), "max_new_tokens": 8},  # a tiny model, tiny budgets
             "train": {"max_length": 256, "batch_size": 2, "ppo_total_episodes": 4, "ppo_epochs": 1},
             "eval": {"tasks": 2, "trials": 2}}
    G = load_settings().nightly.reflections_per_failure
    assert G > 1 and load_settings().rollout.reflections_per_failure == 1  # `retro rollout` keeps its own

    night = nightly_flow(env="toy", tasks=4, trials=2, tag="night-1", overrides=sizes)

    run_id = night["rollout"]["run_id"]
    assert lake.read("SELECT count(*) FROM lake.trials WHERE run_id = ? AND sample > 0", [run_id]).item() == 4 * (G - 1)
    spread = lake.read("SELECT max(spread) AS top, count(*) FILTER (WHERE NOT all_equal) AS apart "
                       "FROM lake.reflection_groups WHERE run_id = ?", [run_id])
    assert spread["top"].item() > 0 and spread["apart"].item() > 0
    trained = night["trained"]
    assert trained["sft"] and trained["rm"], trained["skipped"]
    assert get_model_version(lake, trained["rm"]).metrics["rm/kind"] == "pairwise"
    evaluation = lake.read("SELECT count(*) FILTER (WHERE sample > 0) FROM lake.trials JOIN lake.runs USING (run_id) "
                           "WHERE split = 'eval'").item()
    assert evaluation == 0  # held out: one reflection per failure

    flow_run_id = lake.read("SELECT flow_run_id FROM lake.runs WHERE run_id = ?", [run_id]).item()
    found = artifacts_of(flow_run_id)
    assert set(found) >= {"rollout", "ratings", "datasets", "training", "evaluation", "report"}
    assert text(run_id) in found["rollout"].data and "| 0 | 0\\.0 |" in found["rollout"].data
    assert "rated apart" in found["ratings"].data and "pairs" in found["ratings"].data
    assert f"reward\\_pairs | {text(trained['datasets']['reward_pairs'])} | {trained['rows']['reward_pairs']} |" \
        in found["datasets"].data
    assert text(trained["sft"]) in found["training"].data and text("train/loss") in found["training"].data
    assert "95% bootstrap CIs" in found["evaluation"].data and text("success - incumbent") in found["evaluation"].data
    assert night["report"].endswith("index.html") and f"({Path(night['report']).as_uri()})" in found["report"].data
    logs = "\n".join(run_logs(flow_run_id))
    assert "sft step 1/" in logs and "rm step 1/" in logs  # training steps in the run log as they trained
    drawn = plot_training(read_report_data(lake).models, tmp_path / "training.png")  # the report's figure
    assert drawn["loss"][f"{trained['sft']} (sft)"] >= 1 and drawn["loss"][f"{trained['rm']} (rm)"] >= 1


def test_a_night_that_cannot_train_completes_and_says_which_stage_skipped_and_what_to_change(harness, monkeypatch,
                                                                                            lake):
    """Every reflection names a wrong word, so every rating is 0: nothing to learn, and the run says so."""
    import retro.agent.spec as spec_module
    from flows.artifacts import text
    from flows.nightly import nightly_flow
    from retro.train.result import NEXT_STEP

    def useless(settings, request):
        never = ScriptedLLM(lambda prompt, seed: "Next time use the word wrong.", name="scripted-retro", seeded=True)
        return Models(ScriptedLLM(toyenv.actor_policy, name="scripted-actor"), never, "base")

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", useless)
    state = nightly_flow(env="toy", tasks=2, trials=2, tag="empty-night", return_state=True)
    assert state.is_completed()
    night = state.result()
    assert night["evaluation"] is None and set(night["trained"]["skipped"]) == {"sft", "rm", "ppo"}
    flow_run_id = str(state.state_details.flow_run_id)
    training = artifacts_of(flow_run_id)["training"].data
    assert training.count(": skipped") == 3 and text(NEXT_STEP["sft"]) in training
    assert text(night["trained"]["skipped"]["sft"]) in training  # the stage's own reason, with its counts
    logs = "\n".join(run_logs(flow_run_id))
    assert f"sft trained nothing tonight: {night['trained']['skipped']['sft']}. What to change: {NEXT_STEP['sft']}" \
        in logs
    assert "no candidate adapter tonight, nothing to evaluate" in logs
