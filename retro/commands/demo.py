"""`retro demo`: the main job at a small scale on the embedded model, then the three modes side by side.

The demo's night learns from branches: every failed trial gets BRANCHES reflections, each tried by its
own branch of the next trial, so reflections of one prompt are rated differently and the reward model
has pairs to learn from (with one greedy reflection per failure a 135M actor rates almost every
reflection 0). HotPotQA returns are token F1 (success stays exact match): a 135M actor rarely answers
exactly, and graded returns tell more branches apart.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

import typer

from retro.commands.common import console, print_frame, settings

BRANCHES = 4  # reflections per failed trial in the demo's night
TRAIN_TASKS, EVAL_TASKS, TRIALS = 8, 4, 3
ENV = "hotpotqa"


def overrides() -> dict[str, Any]:
    """The demo's settings on top of the user's: the tiny preset, F1 returns, BRANCHES per failure."""
    return {"preset": "tiny", "rollout": {"hotpotqa_return": "f1", "reflections_per_failure": BRANCHES}}


FIXES = {  # what to change when a stage of the night trains nothing
    "sft": "no reflection helped: raise --train-tasks, or RETRO_ROLLOUT__REFLECTIONS_PER_FAILURE for more branches",
    "rm": "no two reflections of one prompt were rated apart: raise --train-tasks or the branches per failure",
    "ppo": "PPO needs the reward model: see the reward model's line",
}


def demo(
    tasks: Annotated[int, typer.Option(help="Held-out tasks per evaluation rollout.")] = EVAL_TASKS,
    trials: Annotated[int, typer.Option(help="Trials per task.")] = TRIALS,
    train_tasks: Annotated[int, typer.Option(help="Tasks of the nightly training rollout.")] = TRAIN_TASKS,
    env: Annotated[str, typer.Option(help="Environment.")] = ENV,
) -> None:
    """The main job at a small scale on the embedded model: the nightly flow, then all three modes side by side.

    Example: retro demo
    """
    from retro.agent.request import held_out_request
    from retro.commands.flows import run_nightly_flow
    from retro.orchestrate.compare import compare_modes
    from retro.store import Lake

    started = time.perf_counter()
    demo_overrides = overrides()
    s = settings(**demo_overrides)
    console.rule(f"nightly-retrain (Prefect, embedded SmolLM2-135M, {BRANCHES} reflections per failure)")
    demo_overrides["eval"] = {"tasks": tasks, "trials": trials}  # the nightly evaluation = the comparison's runs
    night = run_nightly_flow(env=env, tasks=train_tasks, trials=trials, tag="demo", overrides=demo_overrides)
    trained = night.get("trained") or {}
    _print_night(night, trained)
    console.rule("react vs reflexion vs retroformer on the held-out split")
    lake = Lake(s)
    candidate = trained.get("candidate")
    # retroformer = tonight's candidate (promoted or not; the evaluation already ran it), else the promoted one
    request = held_out_request(s, lake, env=env, tasks=tasks, trials=trials, tag="demo")
    table = compare_modes(s, lake, request, adapter=candidate)
    shown = table.drop("run_id", strict=False)  # narrow enough for an 80-column terminal
    shown = shown.rename({c: c.replace("success_trial_", "trial ") for c in shown.columns if c.startswith("success_")})
    print_frame(shown, title=f"success rate after each trial ({env}, {tasks} held-out tasks)")
    with contextlib.suppress(ImportError):
        from retro.eval.report import write_report

        out = s.home / "report"
        write_report(lake, out)
        console.print(f"report: {out / 'index.html'}")
    console.print(f"lake: {lake.catalog}  (try: retro sql \"SELECT * FROM lake.reflection_groups\")")
    console.print(f"demo wall time: {time.perf_counter() - started:.0f}s")


def _print_night(night: dict[str, Any], trained: dict[str, Any]) -> None:
    """What the night learned from and what it trained; a stage that skipped says why and what to change."""
    console.print(f"ratings: {night.get('ratings')} new; data sets: {night.get('datasets')}")
    trainer = trained.get("trainer", "ppo")
    console.print(f"models: sft={trained.get('sft')} rm={trained.get('rm')} {trainer}={trained.get(trainer)}")
    for stage, why in (trained.get("skipped") or {}).items():
        console.print(f"  [yellow]{why}[/yellow] -> {FIXES.get(stage, FIXES['ppo'])}")
    evaluation = night.get("evaluation")
    if evaluation:
        console.print(f"evaluation: candidate {evaluation['candidate']} {evaluation['candidate_curve']} vs "
                      f"incumbent {evaluation['incumbent']} {evaluation['incumbent_curve']}; "
                      f"promoted={evaluation['promoted']}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
