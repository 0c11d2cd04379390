"""One rollout request, resolved once where it enters (a CLI command, a flow's start) and taken as it is by
every path that runs it: one process, shards, an evaluation's arms, the comparison, the demo, the nightly flow.

Resolving fills the options left out (None) from the settings, checks every count with the option's name,
turns mode "auto" into retroformer once an adapter is promoted (reflexion before), and pins a retroformer
adapter (the named one, else the promoted one) after checking it was trained on settings.retrospective.model:
a bad adapter fails before any model loads, and a promotion during the run cannot split it. Generation
parameters are not options: they are settings, and `make_spec` puts them into the run id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from retro.config import MODES, Settings
from retro.envs import Environment, env_class, held_out_split, select_tasks
from retro.errors import ConfigError, ModelNotFoundError
from retro.llm.base import read_adapter_config, same_base_model
from retro.store import registry
from retro.store.lake import Lake

COUNTS = ("tasks", "trials", "sample", "workers")  # options that must be at least 1 when given


@dataclass(frozen=True)
class RolloutRequest:
    """What to run: plain values (a flow parameter, a shard plan's field), valid by construction."""

    env: str
    split: str
    mode: str  # react | reflexion | retroformer
    tasks: int  # the first N tasks by id, unless task_ids or sample choose
    trials: int  # K trials per task
    task_ids: tuple[str, ...] | None = None  # exactly these tasks
    sample: int | None = None  # N tasks drawn with rollout.seed, spread evenly over the task types
    adapter: str | None = None  # retroformer: the adapter's model_id (None in the other modes)
    adapter_path: str | None = None  # and its folder
    tag: str = ""  # makes a new run of an otherwise identical spec
    workers: int = 1  # > 1: shards over Dask workers (the rollout flow)

    def __post_init__(self) -> None:
        for name in COUNTS:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be at least 1, got {value}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode '{self.mode}': choose react, reflexion or retroformer (or auto)")

    def options(self) -> dict[str, Any]:
        """The request as the options that resolve to it (plain values: flow parameters)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "adapter_path"}


def rollout_request(settings: Settings, lake: Lake, *, env: str | None = None, split: str | None = None,
                    mode: str | None = None, tasks: int | None = None, task_ids: Sequence[str] | None = None,
                    sample: int | None = None, trials: int | None = None, adapter: str | None = None,
                    tag: str = "", workers: int | None = None) -> RolloutRequest:
    """A rollout's request: the options given, the rest from settings.rollout."""
    r = settings.rollout
    given = {"env": env, "split": split, "mode": mode, "tasks": tasks, "task_ids": task_ids, "sample": sample,
             "trials": trials, "adapter": adapter, "workers": workers}
    defaults = {"env": r.env, "split": r.split, "mode": r.mode, "tasks": r.tasks, "task_ids": r.task_ids,
                "sample": r.sample, "trials": r.trials, "adapter": r.adapter, "workers": r.workers}
    return resolve(settings, lake, tag=tag, **{k: defaults[k] if v is None else v for k, v in given.items()})


def held_out_request(settings: Settings, lake: Lake, *, env: str | None = None, tasks: int | None = None,
                     trials: int | None = None, tag: str = "") -> RolloutRequest:
    """An evaluation's request: the environment's held-out split, eval.tasks x eval.trials, in reflexion mode
    (the frozen base; `with_mode` makes the other arms)."""
    env = env or settings.rollout.env
    return resolve(settings, lake, env=env, split=held_out_split(env, settings), mode="reflexion",
                   tasks=settings.eval.tasks if tasks is None else tasks,
                   trials=settings.eval.trials if trials is None else trials, tag=tag)


def with_mode(settings: Settings, lake: Lake, request: RolloutRequest, mode: str,
              adapter: str | None = None) -> RolloutRequest:
    """The same request in another mode (an evaluation's arms, the comparison's modes), resolved like any."""
    return resolve(settings, lake, **{**request.options(), "mode": mode, "adapter": adapter})


def resolve(settings: Settings, lake: Lake, **options: Any) -> RolloutRequest:
    """The one check of a request: counts and mode (by constructing it), environment, then the adapter."""
    if options.get("task_ids") is not None:
        options["task_ids"] = tuple(options["task_ids"])
    if options["mode"] == "auto":
        options["mode"] = auto_mode(lake)
    request = RolloutRequest(**options)
    env_class(request.env)  # an unknown environment is one line now, not after a model load
    if request.mode != "retroformer":
        return replace(request, adapter=None, adapter_path=None)
    model_id, path = resolve_adapter(lake, request.adapter, settings.retrospective.model)
    return replace(request, adapter=model_id, adapter_path=path)


def pick_tasks(settings: Settings, environment: Environment, request: RolloutRequest) -> list[str]:
    """The task ids the request plays in `environment` (its split, chosen as the request says)."""
    r = settings.rollout
    return select_tasks(environment.load_tasks(request.split), request.tasks, task_ids=request.task_ids,
                        sample=request.sample, seed=r.seed, all_variants=r.all_variants)


def resolve_adapter(lake: Lake, adapter: str | None, base_model: str | None = None) -> tuple[str, str]:
    """(model_id, adapter_path) of the named adapter, else of the promoted one.

    Checked here, before any model loads (the embedded one takes seconds to minutes): the folder must
    exist and, given `base_model` (settings.retrospective.model), the adapter must be trained on it.
    """
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
    return "retroformer" if registry.promoted_model(lake) is not None else "reflexion"
