"""The toy environment and scripted models in a process the test did not start (a Dask worker).

Named in `distributed.worker.preload`, Dask imports this file in every worker process and calls
`dask_setup` before the worker takes work, so a fanned-out flow finds `toy` and the scripted models
there, as the monkeypatched test process does.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # for `toyenv` in a freshly spawned worker

import toyenv

import retro.agent.spec as spec_module
from retro.envs import ENVS


def load_models(settings, request):
    """What `retro.agent.spec.load_models` returns in the tests: the toy env's scripted models."""
    models = toyenv.models()
    if request.mode == "react":
        models.retro, models.retro_version = None, None
    if request.mode == "retroformer":  # the scripted retrospective model stands in for the adapter
        models.retro_version = request.adapter
    return models


def dask_setup(worker) -> None:
    """Called by Dask once per worker process (the test process uses monkeypatch instead)."""
    ENVS["toy"] = "toyenv:ToyEnv"
    spec_module.load_models = load_models
