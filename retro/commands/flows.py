"""Commands that run Prefect flows: `retro demo`, `retro nightly`, `retro serve`, `retro train-flow`.

Prefect is imported only here (lazily) and in flows/: the library (retro/) stays Prefect-free.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Annotated

import httpx
import typer

from retro.commands.common import console, print_frame, settings


def demo(
    tasks: Annotated[int, typer.Option(help="Held-out tasks per evaluation rollout.")] = 4,
    trials: Annotated[int, typer.Option(help="Trials per task.")] = 3,
    train_tasks: Annotated[int, typer.Option(help="Tasks of the nightly training rollout.")] = 8,
    env: Annotated[str, typer.Option(help="Environment.")] = "hotpotqa",
) -> None:
    """The main job at a small scale on the embedded model: the nightly flow, then all three modes side by side.

    HotPotQA returns are token F1 here (success stays exact match): a 135M actor rarely answers exactly,
    and with 0/1 returns every rating would be 0 and training would have nothing to learn from.

    Example: retro demo
    """
    from flows.nightly import nightly_flow
    from retro.agent.rollout import load_models
    from retro.eval.compare import compare_modes
    from retro.store import Lake

    started = time.perf_counter()
    overrides = {"preset": "tiny", "rollout": {"hotpotqa_return": "f1"}}
    s = settings(**overrides)
    console.rule("nightly-retrain (Prefect, embedded SmolLM2-135M)")
    overrides["eval"] = {"tasks": tasks, "trials": trials}  # the nightly evaluation = the comparison's runs
    night = nightly_flow(env=env, tasks=train_tasks, trials=trials, tag="demo", overrides=overrides)
    console.rule("react vs reflexion vs retroformer on the held-out split")
    lake = Lake(s)
    candidate = (night.get("trained") or {}).get("candidate")
    # retroformer = tonight's candidate (promoted or not; the evaluation already ran it), else the promoted one
    table = compare_modes(s, lake, env=env, tasks=tasks, trials=trials, tag="demo",
                          models_for=lambda mode, adapter: load_models(s, lake, mode, candidate or adapter))
    shown = table.drop("run_id", strict=False)  # narrow enough for an 80-column terminal
    shown = shown.rename({c: c.replace("success_trial_", "trial ") for c in shown.columns if c.startswith("success_")})
    print_frame(shown, title=f"success rate after each trial ({env}, {tasks} held-out tasks)")
    console.print(f"data sets: {night.get('datasets')}")
    trained = night.get("trained") or {}
    console.print(f"models: sft={trained.get('sft')} rm={trained.get('rm')} ppo={trained.get('ppo')}"
                  + "".join(f"\n  {why}" for why in (trained.get("skipped") or {}).values()))
    evaluation = night.get("evaluation")
    if evaluation:
        console.print(f"evaluation: candidate {evaluation['candidate']} {evaluation['candidate_curve']} vs "
                      f"incumbent {evaluation['incumbent']} {evaluation['incumbent_curve']}; "
                      f"promoted={evaluation['promoted']}")
    with contextlib.suppress(ImportError):
        from retro.eval.report import write_report

        out = s.home / "report"
        write_report(lake, out)
        console.print(f"report: {out / 'index.html'}")
    console.print(f"lake: {lake.catalog}  (try: retro sql \"SELECT * FROM lake.trials LIMIT 5\")")
    console.print(f"demo wall time: {time.perf_counter() - started:.0f}s")


def nightly(
    env: Annotated[str | None, typer.Option(help="Environment.")] = None,
    tasks: Annotated[int | None, typer.Option(help="Tasks for the training rollout.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials per task.")] = None,
    tag: Annotated[str | None, typer.Option(help="Default: nightly-YYYY-MM-DD (reruns that day are no-ops).")] = None,
) -> None:
    """Run the nightly-retrain flow once, now (Prefect ephemeral mode; no server needed).

    Example: retro nightly --tasks 10
    """
    from flows.nightly import nightly_flow

    settings()  # validate the configuration before Prefect starts
    console.print(nightly_flow(env=env, tasks=tasks, trials=trials, tag=tag))


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
    app.command()(demo)
    app.command()(nightly)
    app.command()(serve)
