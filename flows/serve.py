"""Deployments, in one place: `just serve` starts a local Prefect server on 127.0.0.1 and serves them.

    retro serve                        then: prefect deployment run 'nightly-retrain/nightly'

The nightly deployment runs on the cron of settings.schedule (default 02:00 UTC).
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from flows.evaluate import evaluate_flow
from flows.label import label_flow
from flows.nightly import nightly_flow
from flows.rollout import rollout_flow
from flows.train import build_datasets_flow, train_flow
from retro.config import Settings


def deployments(settings: Settings) -> list:
    """Stable names: 'nightly-retrain/nightly', 'rollout/rollout', 'label/label', ..."""
    schedule = settings.schedule
    return [
        nightly_flow.to_deployment(name="nightly", schedule=Cron(schedule.nightly_cron, timezone=schedule.timezone)),
        rollout_flow.to_deployment(name="rollout"),
        label_flow.to_deployment(name="label"),
        build_datasets_flow.to_deployment(name="build-datasets"),
        train_flow.to_deployment(name="train"),
        evaluate_flow.to_deployment(name="evaluate"),
    ]


def serve_all(settings: Settings) -> None:
    """Serve every deployment from this process until interrupted."""
    serve(*deployments(settings), pause_on_shutdown=False)  # a restart keeps the nightly schedule active
