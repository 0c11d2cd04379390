"""`retro rollout` and `retro label`: run trials into the lake, then rate the reflections."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from retro.commands.common import console, settings
from retro.store import Lake


def rollout(
    env: Annotated[str | None, typer.Option(help="Environment: hotpotqa, alfworld, webshop.")] = None,
    split: Annotated[str | None, typer.Option(help="Task split, e.g. eval or train.")] = None,
    mode: Annotated[str | None, typer.Option(help="react, reflexion or retroformer.")] = None,
    tasks: Annotated[int | None, typer.Option(help="First N tasks by id (one per ALFWorld task).")] = None,
    task_ids: Annotated[str | None, typer.Option(help="Exactly these tasks: ids separated by commas.")] = None,
    sample: Annotated[int | None, typer.Option(
        help="N tasks drawn with rollout.seed, spread evenly over the task types.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials per task (K).")] = None,
    adapter: Annotated[str | None, typer.Option(help="retroformer mode: model_id (default: promoted).")] = None,
    tag: Annotated[str, typer.Option(help="Makes a new run of an otherwise identical spec.")] = "",
    workers: Annotated[int | None, typer.Option(
        min=1, help="Split the tasks over this many Dask workers (the rollout flow; default: settings rollout.workers).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run N tasks x K trials; every trial, step and reflection lands in the lake (rerun = resume).

    Example: retro rollout --env hotpotqa --split eval --mode reflexion --tasks 20 --trials 4
    """
    from retro.agent.request import rollout_request
    from retro.orchestrate.rollout import rollout as run_rollout

    s = settings()
    lake = Lake(s)
    ids = [t.strip() for t in task_ids.split(",") if t.strip()] if task_ids else None
    request = rollout_request(s, lake, env=env, split=split, mode=mode, tasks=tasks, task_ids=ids, sample=sample,
                              trials=trials, adapter=adapter, tag=tag, workers=workers)
    if request.workers > 1:  # Prefect + Dask: shards in parallel, one commit
        from retro.commands.flows import run_rollout_flow

        _print_rollout(run_rollout_flow(request), as_json, "")
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("success {task.fields[successes]}/{task.fields[n_tasks]}"),
               TextColumn("{task.fields[tps]:.1f} tok/s"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=as_json, disable=as_json) as bar:
        job = bar.add_task("episodes", total=None, successes=0, n_tasks=0, tps=0.0)

        def progress(event: dict) -> None:
            bar.update(job, completed=event["episodes_done"], total=event["max_episodes"],
                       successes=event["successes"], n_tasks=event["n_tasks"], tps=event["tokens_per_second"])

        result = run_rollout(s, lake, request, progress=progress)
    summary = {"run_id": result.run_id, "success_by_trial": result.success_by_trial, "written": result.written,
               "retried": result.retried,
               "seconds": round(result.seconds, 1), "tokens_per_second": round(result.tokens_per_second, 1)}
    _print_rollout(summary, as_json, f" in {result.seconds:.0f}s ({result.tokens_per_second:.1f} tok/s)")


def _print_rollout(summary: dict, as_json: bool, timing: str) -> None:
    """A rollout's summary as JSON, or its run id, new trials and success after each trial."""
    if as_json:
        print(json.dumps(summary))
        return
    retried = f", {summary['retried']} model calls retried" if summary.get("retried") else ""
    console.print(Text.assemble("run ", (summary["run_id"], "bold"),
                                f": {summary['written']['trials']} new trials{timing}{retried}"))
    for i, rate in enumerate(summary["success_by_trial"]):
        console.print(f"  success after trial {i}: {rate:.0%}")


def label(
    version: Annotated[str | None, typer.Option(help="Label version (default: settings label.version).")] = None,
) -> None:
    """Rate every reflection whose next trial exists: rating = G(i+1) - G(i).

    Example: retro label
    """
    from retro.agent.rating import rate_reflections

    s = settings()
    written = rate_reflections(Lake(s), version or s.label.version)
    console.print(f"rated {written} reflections (label version {version or s.label.version})")




def evaluate(
    candidate: Annotated[str, typer.Option("--candidate", help="model_id of the adapter to evaluate.")],
    env: Annotated[str | None, typer.Option(help="Environment (default: settings).")] = None,
    tasks: Annotated[int | None, typer.Option(help="Held-out tasks (default: settings eval.tasks).")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials per task.")] = None,
) -> None:
    """Run the candidate and the current best on the held-out split (same tasks, same seed); promote if better.

    Example: retro eval --candidate ppo-20261124-0001
    """
    from retro.agent.request import held_out_request
    from retro.orchestrate.promote import evaluate_candidate

    s = settings()
    lake = Lake(s)
    request = held_out_request(s, lake, env=env, tasks=tasks, trials=trials)
    console.print(evaluate_candidate(s, lake, request, candidate).reason)


def register(app: typer.Typer) -> None:
    app.command()(rollout)
    app.command()(label)
    app.command(name="eval")(evaluate)
