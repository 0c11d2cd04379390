"""Environments by name: the built-in ones in a dict, others from installed packages.

A package adds an environment by declaring an entry point in the group `retro.envs`
(`[project.entry-points."retro.envs"] name = "module:Class"`); the class takes the Settings and follows
`retro.envs.base.Environment`. A built-in name wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging

from retro.config import Settings
from retro.envs.base import Environment, Episode, StepResult, Task, own_held_out_split
from retro.envs.selection import select_tasks
from retro.errors import UnknownEnvError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "retro.envs"
ENVS: dict[str, str] = {
    "hotpotqa": "retro.envs.hotpotqa:HotpotQA",
    "alfworld": "retro.envs.alfworld:ALFWorld",
    "webshop": "retro.envs.webshop:WebShop",
}


def available_envs() -> dict[str, str]:
    """Name -> "module:Class" of every environment: the built-ins, then the installed packages' ones."""
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name in found.keys() & ENVS.keys():
        log.warning("entry point %s=%s is ignored: %s is a built-in environment", name, found[name], name)
    return {**ENVS, **{name: value for name, value in found.items() if name not in ENVS}}


def env_class(name: str) -> type:
    """The class of an environment, imported but not instantiated (its defaults, such as max_steps)."""
    known = available_envs()
    if name not in known:
        raise UnknownEnvError(f"unknown environment '{name}': choose one of {', '.join(known)} (or install a "
                              f"package with a '{ENTRY_POINT_GROUP}' entry point)")
    module, cls = known[name].split(":")
    return getattr(importlib.import_module(module), cls)


def held_out_split(name: str, settings: Settings) -> str:
    """The split evaluations of `name` run on: settings eval.split when set, else the environment's own."""
    return settings.eval.split or own_held_out_split(env_class(name))


def get_env(name: str, settings: Settings) -> Environment:
    """Instantiate an environment by name (each takes the Settings for its data folder and options)."""
    return env_class(name)(settings)


__all__ = ["ENVS", "Environment", "Episode", "StepResult", "Task", "available_envs", "env_class", "get_env",
           "held_out_split", "own_held_out_split", "select_tasks"]
