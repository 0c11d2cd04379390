"""`retro demo`: the main job at a small scale on the embedded model, then the three modes side by side.

The demo's night learns from branches: every failed trial gets BRANCHES reflections, each tried by its
own branch of the next trial, so reflections of one prompt are rated differently and the reward model
has pairs to learn from (with one greedy reflection per failure a 135M actor rates almost every
reflection 0). HotPotQA returns are token F1 (success stays exact match): a 135M actor rarely answers
exactly, and graded returns tell more branches apart. The table shows both, per trial. Trials stop at
MAX_STEPS actor steps (HotPotQA's own default is 7) to keep the demo within minutes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from retro.commands.common import console, print_frame, settings

BRANCHES = 4  # reflections per failed trial in the demo's night
TRAIN_TASKS, EVAL_TASKS, TRIALS, MAX_STEPS = 8, 4, 3, 4
ENV = "hotpotqa"


def overrides() -> dict[str, Any]:
    """The demo's settings on top of the user's: the tiny preset, F1 returns, BRANCHES per failure."""
    return {"preset": "tiny",
            "rollout": {"hotpotqa_return": "f1", "reflections_per_failure": BRANCHES, "max_steps": MAX_STEPS}}


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
    print_frame(per_trial(lake, table), title=f"{env}, {tasks} held-out tasks: mean F1 after each trial, and "
                                               "exact-match success after the last")
    with contextlib.suppress(ImportError):
        from retro.eval.report import write_report

        out = s.home / "report"
        write_report(lake, out)
        console.print(f"report: {out / 'index.html'}")
    console.print(f"lake: {lake.catalog}  (try: retro sql \"SELECT * FROM lake.reflection_groups\")")
    console.print(f"demo wall time: {time.perf_counter() - started:.0f}s")


def per_trial(lake, table) -> Any:
    """One row per mode: mean F1 after each trial and the final success rate (80 columns wide)."""
    import polars as pl

    from retro.eval.paired import compare_arms

    arms = {mode if mode != "retroformer" else f"retroformer {version}": run_id
            for mode, version, run_id in table.select("mode", "model_version", "run_id").iter_rows()}
    if "reflexion" not in arms:  # nothing to compare with: the success rates as the comparison gave them
        return table.drop("run_id")
    scores = compare_arms(lake, arms, n_boot=1)
    last = scores["trial"].max()
    f1 = scores.pivot(on="trial", index="arm", values="f1").rename(lambda c: c if c == "arm" else f"F1 t{c}")
    success = scores.filter(pl.col("trial") == last).select("arm", pl.col("success").alias(f"success t{last}"))
    return f1.join(success, on="arm").with_columns(pl.selectors.float().round(3))


def _print_night(night: dict[str, Any], trained: dict[str, Any]) -> None:
    """What the night learned from and what it trained; a stage that skipped says why and what to change."""
    console.print(f"ratings: {night.get('ratings')} new; data sets: {night.get('datasets')}")
    trainer = trained.get("trainer", "ppo")
    console.print(f"models: sft={trained.get('sft')} rm={trained.get('rm')} {trainer}={trained.get(trainer)}")
    for stage, why in (trained.get("skipped") or {}).items():
        console.print(Text.assemble("  ", (str(why), "yellow"), f" -> {FIXES.get(stage, FIXES['ppo'])}"))
    evaluation = night.get("evaluation")
    if evaluation:
        console.print(f"evaluation: candidate {evaluation['candidate']} {evaluation['candidate_curve']} vs "
                      f"incumbent {evaluation['incumbent']} {evaluation['incumbent_curve']}; "
                      f"promoted={evaluation['promoted']}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
