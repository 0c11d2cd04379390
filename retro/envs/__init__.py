"""Environments by name. A dict, not a registry framework: add a line to add an environment."""

from __future__ import annotations

import importlib

from retro.config import Settings
from retro.envs.base import Environment, Episode, StepResult, Task
from retro.errors import UnknownEnvError

ENVS: dict[str, str] = {
    "hotpotqa": "retro.envs.hotpotqa:HotpotQA",
    "alfworld": "retro.envs.alfworld:ALFWorld",
    "webshop": "retro.envs.webshop:WebShop",
}


def get_env(name: str, settings: Settings) -> Environment:
    """Instantiate an environment by name (each takes the Settings for its data folder and options)."""
    if name not in ENVS:
        raise UnknownEnvError(f"unknown environment '{name}': choose one of {', '.join(ENVS)}")
    module, cls = ENVS[name].split(":")
    return getattr(importlib.import_module(module), cls)(settings)


__all__ = ["ENVS", "Environment", "Episode", "StepResult", "Task", "get_env"]
