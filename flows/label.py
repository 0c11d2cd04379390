"""Label: rate every reflection whose next trial exists (rating = G(i+1) - G(i)).

    python -m flows.label              (or: prefect deployment run 'label/label')
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.artifacts import publish_ratings
from flows.common import open_lake, retry_transient
from flows.logs import run_logger
from retro.agent.rating import rate_reflections
from retro.store.queries import rating_spread


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def label_task(version: str | None = None, overrides: dict[str, Any] | None = None,
               run_id: str | None = None) -> int:
    """Rate what is new; with `run_id` (the night's rollout), log and publish how that run's ratings spread."""
    log = run_logger()
    settings, lake = open_lake(overrides)
    version = version or settings.label.version
    written = rate_reflections(lake, version)
    log.info("label %s: %d new ratings", version, written)
    if run_id is not None:
        spread = rating_spread(lake, run_id)
        log.info("ratings of run %s: %s", run_id, spread)
        publish_ratings(spread, run_id, written)
    return written


@flow(name="label")
def label_flow(version: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    """Rate the reflections not yet rated under this label version."""
    return label_task(version, overrides)


if __name__ == "__main__":
    label_flow()
