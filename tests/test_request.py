"""One rollout request, resolved once: the CLI, shards, evaluation and flows agree on what a set of options means."""

from __future__ import annotations

import json
from dataclasses import replace

import clirun
import pytest
import toyworker

from retro.agent.request import RolloutRequest, held_out_request, rollout_request, with_mode
from retro.envs import ENVS
from retro.errors import ConfigError, ModelNotFoundError, UnknownEnvError
from retro.orchestrate.shards import plan_shards
from retro.store.registry import ModelVersion, promote, register_model_version


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    """The toy environment, and scripted models wherever a path loads models."""
    import retro.agent.spec as spec_module

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", toyworker.load_models)


def adapter(settings, lake, model_id: str, base_model: str) -> None:
    """A registered adapter folder that passes the checks before a model loads (config and weights)."""
    folder = settings.models_dir / model_id
    register_model_version(lake, ModelVersion(model_id=model_id, stage="sft", base_model=base_model,
                                              adapter_path=folder, dataset="sft", dataset_version="v"))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_model}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")


def test_options_left_out_come_from_settings_and_explicit_ones_are_kept(settings, lake):
    request = rollout_request(settings, lake, env="toy", tasks=2)
    r = settings.rollout
    assert (request.split, request.mode, request.trials, request.workers) == (r.split, r.mode, r.trials, r.workers)
    assert request.tasks == 2 and request.adapter is None
    # the request's plain values (a flow's parameters) resolve to the same request
    assert rollout_request(settings, lake, **request.options()) == request


@pytest.mark.parametrize("option", ["tasks", "trials", "sample", "workers"])
def test_every_count_is_checked_with_its_option_name(settings, lake, option):
    with pytest.raises(ConfigError, match=f"^--{option} must be at least 1, got 0$"):
        rollout_request(settings, lake, env="toy", **{option: 0})
    with pytest.raises(ConfigError, match=f"--{option} must be at least 1"):
        replace(rollout_request(settings, lake, env="toy"), **{option: -1})  # also when built by hand


@pytest.mark.parametrize("workers", [None, "1", "2"])
def test_tasks_0_is_refused_the_same_with_or_without_workers(retro_home, workers):
    args = ["rollout", "--env", "toy", "--tasks", "0", *(["--workers", workers] if workers else [])]
    assert clirun.retro(*args).one_line_error == "error: --tasks must be at least 1, got 0"


def test_workers_1_is_the_single_process_path(retro_home):
    first = clirun.retro("rollout", "--env", "toy", "--mode", "reflexion", "--tasks", "2", "--trials", "2", "--json")
    again = clirun.retro("rollout", "--env", "toy", "--mode", "reflexion", "--tasks", "2", "--trials", "2",
                         "--workers", "1", "--json")
    assert first.code == again.code == 0, first.err + again.err
    first, again = json.loads(first.out.splitlines()[-1]), json.loads(again.out.splitlines()[-1])
    assert first["run_id"] == again["run_id"] and first["written"]["trials"] == 4
    assert again["written"]["trials"] == 0  # the same run, resumed: nothing left to do


def test_a_retroformer_request_pins_the_promoted_adapter_and_checks_its_base(settings, lake):
    with pytest.raises(ModelNotFoundError, match="none is promoted"):
        rollout_request(settings, lake, env="toy", mode="retroformer")
    assert rollout_request(settings, lake, env="toy", mode="auto").mode == "reflexion"  # nothing promoted yet
    adapter(settings, lake, "sft-mine", settings.retrospective.model)
    promote(lake, "sft-mine", reason="test")
    pinned = rollout_request(settings, lake, env="toy", mode="auto")
    assert (pinned.mode, pinned.adapter) == ("retroformer", "sft-mine")
    assert pinned.adapter_path == str(settings.models_dir / "sft-mine")
    adapter(settings, lake, "sft-other", "some/other-base")
    with pytest.raises(ModelNotFoundError, match="trained on base model 'some/other-base'"):
        rollout_request(settings, lake, env="toy", mode="retroformer", adapter="sft-other")


def test_shards_take_the_request_as_it_was_resolved(settings, lake):
    """plan_shards no longer resolves anything itself: the counts, mode and adapter checks happened once."""
    adapter(settings, lake, "sft-mine", settings.retrospective.model)
    promote(lake, "sft-mine", reason="test")
    request = rollout_request(settings, lake, env="toy", split="train", mode="retroformer", tasks=3, workers=2)
    plan = plan_shards(settings, lake, request)
    assert plan.request == request and plan.request.adapter == "sft-mine"
    assert [len(shard) for shard in plan.shards] == [2, 1] and len(plan.task_ids) == 3


def test_held_out_request_and_its_arms(settings, lake):
    request = held_out_request(settings, lake, env="toy", trials=2)
    assert (request.split, request.mode, request.tasks, request.trials) == ("eval", "reflexion",
                                                                            settings.eval.tasks, 2)
    assert request.task_ids is None and request.sample is None  # rollout.task_ids pick train tasks, not these
    assert with_mode(settings, lake, request, "react") == replace(request, mode="react")
    adapter(settings, lake, "sft-mine", settings.retrospective.model)
    arm = with_mode(settings, lake, request, "retroformer", "sft-mine")
    assert (arm.mode, arm.adapter, arm.split, arm.tasks) == ("retroformer", "sft-mine", "eval", request.tasks)


def test_an_unknown_mode_or_environment_is_one_line_before_any_model(settings, lake):
    with pytest.raises(ConfigError, match="unknown mode 'sometimes'"):
        RolloutRequest(env="toy", split="eval", mode="sometimes", tasks=1, trials=1)
    with pytest.raises(UnknownEnvError, match="unknown environment 'nope'"):
        rollout_request(settings, lake, env="nope")
