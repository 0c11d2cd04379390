"""Commands that run Prefect flows: `retro nightly`, `retro serve`; and the door the other commands take to
flows/ (`retro rollout --workers N`, `retro demo`).

This module is the only one in retro/ that imports flows/ or Prefect (lazily): the library stays Prefect-free.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer

from retro.commands.common import console, settings

if TYPE_CHECKING:
    from retro.agent.request import RolloutRequest


def run_rollout_flow(request: RolloutRequest) -> dict[str, Any]:
    """The rollout flow (shards over Dask workers) on a request resolved here; its parameters are the
    request's plain values, which resolve to the same request at the flow's start."""
    from flows.rollout import rollout_flow

    return rollout_flow(**request.options())


def run_nightly_flow(**params: Any) -> dict[str, Any]:
    """The nightly-retrain flow, now, in this process (Prefect's ephemeral mode)."""
    from flows.nightly import nightly_flow

    return nightly_flow(**params)


def nightly(
    env: Annotated[str | None, typer.Option(help="Environment.")] = None,
    tasks: Annotated[int | None, typer.Option(help="Tasks for the training rollout.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials per task.")] = None,
    tag: Annotated[str | None, typer.Option(help="Default: nightly-YYYY-MM-DD (reruns that day are no-ops).")] = None,
) -> None:
    """Run the nightly-retrain flow once, now (Prefect ephemeral mode; no server needed).

    Example: retro nightly --tasks 10
    """
    settings()  # validate the configuration before Prefect starts
    console.print(run_nightly_flow(env=env, tasks=tasks, trials=trials, tag=tag))


def serve(
    port: Annotated[int, typer.Option(help="Port of the local Prefect server (127.0.0.1).")] = 4200,
) -> None:
    """Start a Prefect server on 127.0.0.1 and serve the deployments (nightly on its cron). Ctrl-C stops both.

    Example: retro serve   then, in another shell: prefect deployment run 'nightly-retrain/nightly'
    """
    s = settings()
    import flows  # noqa: F401  (sets PREFECT_HOME etc. before Prefect reads its settings)

    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env={**os.environ})
    try:
        _wait_healthy(url, server)
        os.environ["PREFECT_API_URL"] = url
        console.print(f"Prefect server at http://127.0.0.1:{port} (UI); serving deployments; Ctrl-C to stop")
        from flows.serve import serve_all

        serve_all(s)
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
        if server.poll() is None:
            server.kill()
        console.print("stopped server and runner")


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    from retro.errors import BackendUnreachableError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BackendUnreachableError(f"Prefect server exited with code {server.returncode}: is port in use?")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise BackendUnreachableError(f"Prefect server at {url} did not start in {timeout_s:.0f}s")


def register(app: typer.Typer) -> None:
    app.command()(nightly)
    app.command()(serve)
