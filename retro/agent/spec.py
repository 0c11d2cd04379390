"""A run's models and its spec: the LLMs a request's mode needs, and the RolloutSpec whose hash is the run id.

Generation parameters come from the settings here (and only here) into the spec, so they are part of the
run id; the request (retro.agent.request) says what to run, with which adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from retro.agent.request import RolloutRequest
from retro.agent.runner import RolloutSpec
from retro.config import Settings
from retro.envs import env_class
from retro.envs.base import reflection_tokens
from retro.errors import ModelNotFoundError
from retro.llm.base import LLM


@dataclass
class Models:
    actor: LLM
    retro: LLM | None
    retro_version: str | None  # "base", an adapter's model_id, or None in react mode


def branches_for(settings: Settings, mode: str) -> int:
    """Episodes per failed task in the next trial: its main line and its branches (react reflects on none)."""
    return settings.rollout.reflections_per_failure if mode != "react" else 1


def episodes_at_once(settings: Settings, request: RolloutRequest) -> int:
    """The most episodes the request's run steps together (every task failing into all its branches): the
    prompts of its largest batch, which sizes an in-process engine's slots."""
    tasks = len(request.task_ids) if request.task_ids else request.sample or request.tasks
    return max(1, tasks) * branches_for(settings, request.mode)


def load_models(settings: Settings, request: RolloutRequest) -> Models:
    """The actor and, for reflexion/retroformer, the retrospective model (sharing one base when equal)."""
    from retro.llm import make_llm

    if request.mode == "retroformer" and request.adapter_path is None:
        raise ModelNotFoundError("a retroformer request without an adapter: build it with rollout_request")
    batch = episodes_at_once(settings, request)
    actor = make_llm(settings.actor, settings, batch=batch)
    if request.mode == "react":
        return Models(actor, None, None)
    if request.mode == "reflexion":
        return Models(actor, make_llm(settings.retrospective, settings, batch=batch), "base")
    return Models(actor, make_llm(settings.retrospective, settings, adapter_path=request.adapter_path, batch=batch),
                  request.adapter)


def make_spec(settings: Settings, models: Models, mode: str, env: str, split: str, task_ids: list[str],
              trials: int, tag: str = "") -> RolloutSpec:
    r = settings.rollout
    branches = branches_for(settings, mode)
    return RolloutSpec(
        env=env, split=split, mode=mode, task_ids=tuple(task_ids), trials=trials,
        max_steps=r.max_steps or env_class(env).max_steps,  # None: the environment's default
        memory_size=r.memory_size, seed=r.seed, actor_model=models.actor.name,
        retro_model=models.retro.name if models.retro else None, retro_model_version=models.retro_version,
        actor_max_new_tokens=settings.actor.max_new_tokens,
        retro_max_new_tokens=reflection_tokens(settings.retrospective.max_new_tokens, [env_class(env)]),
        retro_temperature=settings.retrospective.temperature, tag=tag,
        actor_temperature=settings.actor.temperature, actor_top_p=settings.actor.top_p,
        retro_top_p=settings.retrospective.top_p, reflections_per_failure=branches,
        branch_temperature=r.branch_temperature if branches > 1 else 0.0,
        scoring="hotpotqa_return=f1" if env == "hotpotqa" and r.hotpotqa_return == "f1" else "",
        constrain_actions=settings.actor.constrains_actions(),
    )
