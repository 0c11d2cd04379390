"""One rollout from settings: pick the tasks, load the models for the mode, run, return the result."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retro.agent.runner import ProgressFn, RolloutSpec, Runner, RunResult
from retro.config import MODES, Settings
from retro.envs import env_class, get_env, select_tasks
from retro.errors import ConfigError, LakeBusyError, ModelNotFoundError
from retro.llm.base import LLM, read_adapter_config, same_base_model
from retro.provenance import code_version
from retro.store.lake import Lake

log = logging.getLogger(__name__)


@dataclass
class Models:
    actor: LLM
    retro: LLM | None
    retro_version: str | None  # "base", an adapter's model_id, or None in react mode


def resolve_adapter(lake: Lake, adapter: str | None, base_model: str | None = None) -> tuple[str, str]:
    """(model_id, adapter_path) of the named adapter, else of the promoted one.

    Checked here, before any model loads (the embedded one takes seconds to minutes): the folder must
    exist and, given `base_model` (settings.retrospective.model), the adapter must be trained on it.
    """
    from retro.train import registry

    if adapter is not None:
        version = registry.get_model_version(lake, adapter)
    else:
        version = registry.promoted_model(lake)
        if version is None:
            raise ModelNotFoundError(
                "retroformer mode needs a trained adapter and none is promoted: run `retro train all` then "
                "`retro eval --candidate MODEL_ID`, or pass --adapter MODEL_ID, or use --mode reflexion"
            )
    if not version.adapter_path:
        raise ModelNotFoundError(f"model version {version.model_id} has no adapter path: pick another with --adapter")
    if base_model is not None and not same_base_model(version.base_model, base_model):
        raise ModelNotFoundError(
            f"adapter {version.model_id} was trained on base model {version.base_model!r}, but "
            f"RETRO_RETROSPECTIVE__MODEL is {base_model!r}: set it to {version.base_model!r} or pick an adapter "
            "trained on this base (`retro models list`)"
        )
    read_adapter_config(Path(version.adapter_path), f"model version {version.model_id}")
    return version.model_id, str(version.adapter_path)


def auto_mode(lake: Lake) -> str:
    """retroformer once an adapter is promoted, reflexion (the frozen base) before."""
    from retro.train import registry

    return "retroformer" if registry.promoted_model(lake) is not None else "reflexion"


def load_models(settings: Settings, lake: Lake, mode: str, adapter: str | None = None) -> Models:
    """The actor and, for reflexion/retroformer, the retrospective model (sharing one base when equal)."""
    from retro.llm import make_llm

    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}': choose react, reflexion or retroformer")
    if mode == "retroformer":  # before the actor loads: a bad adapter fails in a second, not after a model load
        model_id, path = resolve_adapter(lake, adapter, settings.retrospective.model)
    actor = make_llm(settings.actor, settings)
    if mode == "react":
        return Models(actor, None, None)
    if mode == "reflexion":
        return Models(actor, make_llm(settings.retrospective, settings), "base")
    return Models(actor, make_llm(settings.retrospective, settings, adapter_path=path), model_id)


def check_counts(tasks: int | None, trials: int | None) -> None:
    """Explicit task and trial counts (CLI options, flow parameters) are at least 1, like the settings."""
    for name, value in (("tasks", tasks), ("trials", trials)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")


def make_spec(settings: Settings, models: Models, mode: str, env: str, split: str, task_ids: list[str],
              trials: int, tag: str = "") -> RolloutSpec:
    r = settings.rollout
    branches = r.reflections_per_failure if mode != "react" else 1  # react writes no reflections
    return RolloutSpec(
        env=env, split=split, mode=mode, task_ids=tuple(task_ids), trials=trials,
        max_steps=r.max_steps or env_class(env).max_steps,  # None: the environment's default
        memory_size=r.memory_size, seed=r.seed, actor_model=models.actor.name,
        retro_model=models.retro.name if models.retro else None, retro_model_version=models.retro_version,
        actor_max_new_tokens=settings.actor.max_new_tokens,
        retro_max_new_tokens=settings.retrospective.max_new_tokens,
        retro_temperature=settings.retrospective.temperature, tag=tag,
        actor_temperature=settings.actor.temperature, actor_top_p=settings.actor.top_p,
        retro_top_p=settings.retrospective.top_p, reflections_per_failure=branches,
        branch_temperature=r.branch_temperature if branches > 1 else 0.0,
        scoring="hotpotqa_return=f1" if env == "hotpotqa" and r.hotpotqa_return == "f1" else "",
    )


def rollout(settings: Settings, lake: Lake, *, env: str | None = None, split: str | None = None,
            mode: str | None = None, tasks: int | None = None, trials: int | None = None,
            adapter: str | None = None, tag: str = "", flow_run_id: str | None = None,
            models: Models | None = None, progress: ProgressFn | None = None) -> RunResult:
    """Run N tasks x K trials in one mode and commit everything to the lake (resumable, idempotent).

    Arguments left as None come from `settings.rollout`. `models` lets tests pass scripted LLMs.
    """
    r = settings.rollout
    env, split, mode = env or r.env, split or r.split, mode or r.mode
    check_counts(tasks, trials)  # `or` below would quietly turn a 0 into the default
    tasks, trials = tasks or r.tasks, trials or r.trials
    if mode == "auto":
        mode = auto_mode(lake)
    environment = get_env(env, settings)
    task_ids = select_tasks(environment.load_tasks(split), r, tasks)
    models = models or load_models(settings, lake, mode, adapter or r.adapter)
    spec = make_spec(settings, models, mode, env, split, task_ids, trials, tag)
    runner = Runner(lake, environment, models.actor, models.retro, spec, flow_run_id=flow_run_id,
                    config_json=settings.config_json(), config_hash=settings.config_hash(),
                    code_version=code_version(), progress=progress)
    log.info("rollout %s: %s on %s/%s, %d tasks x %d trials", spec.run_id, mode, env, split, len(task_ids), trials)
    with run_lease(lake, spec.run_id):
        return runner.run()


@contextlib.contextmanager
def run_lease(lake: Lake, run_id: str) -> Iterator[None]:
    """One process at a time per run. Two processes running the same run would each commit their own
    trajectory of a trial, and the lake would keep parts of both (a trial's steps and reflection are keyed
    like the trial), so the second one stops at once; a LakeBusyError, which flows retry. The kernel drops
    the lease when its holder dies, SIGKILL included, so a crashed run resumes with no cleanup.
    A PostgreSQL catalog spans machines, where a file lock cannot reach: runs there go through the
    fan-out flow, which writes each run once.
    """
    if lake.shared_catalog:
        yield
        return
    path = lake.dir / ".runs" / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LakeBusyError(
                f"run {run_id} is already running in another process: wait for it (rerunning then resumes the "
                "run), or make this a separate run with --tag"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
