"""What every flow shares: settings per task, the flow-run id, and which failures deserve a retry."""

from __future__ import annotations

from typing import Any

from prefect.runtime import flow_run

from retro.config import Settings, load_settings
from retro.errors import BackendUnreachableError, LakeBusyError
from retro.store import Lake

TRANSIENT = (LakeBusyError, BackendUnreachableError, ConnectionError, TimeoutError)


def retry_transient(task, task_run, state) -> bool:
    """Retry only what may heal by itself (a busy lake, an LLM server that was down); never bad data."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:  # noqa: BLE001 (any other failure is not worth a retry)
        return False
    return False


def open_lake(overrides: dict[str, Any] | None = None) -> tuple[Settings, Lake]:
    """Settings (env vars, retro.toml, plus the flow's overrides) and the lake they point at."""
    settings = load_settings(**(overrides or {}))
    return settings, Lake(settings)


def current_flow_run_id() -> str | None:
    """The Prefect flow-run id, stored in `runs.flow_run_id` so SQL can join a trial to its flow run."""
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None
