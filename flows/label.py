"""Label: rate every reflection whose next trial exists (rating = G(i+1) - G(i)).

    python -m flows.label              (or: prefect deployment run 'label/label')
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import open_lake, retry_transient
from retro.agent.rating import rate_reflections


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def label_task(version: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    settings, lake = open_lake(overrides)
    version = version or settings.label.version
    written = rate_reflections(lake, version)
    get_run_logger().info("label %s: %d new ratings", version, written)
    return written


@flow(name="label")
def label_flow(version: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    """Rate the reflections not yet rated under this label version."""
    return label_task(version, overrides)


if __name__ == "__main__":
    label_flow()
