"""Rollout throughput: the batched runner vs one episode at a time, same model, tasks and decoding.

The reference is how Reflexion's and Retroformer's own code run: one task's episode steps alone, one
call at a time. The batched runner steps every live episode in one generate call (the actor's backend
batches them: one generate() on hf, concurrent requests to the engine's slots on llamacpp/openai).

Both runs decode greedily on the same model, so they should take the same actions; the benchmark counts
the steps whose action equals the reference loop's (a padded or differently batched row computes the same
logits up to float rounding, which can flip a near-tie now and then). An untimed warm-up loads the model.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import fresh_settings

RUNS = [  # (row, one episode at a time?)
    ("batched runner", False),
    ("sequential (the reference loop)", True),
]


@dataclass
class Measured:
    wall: float
    steps: dict[tuple, str]  # (task, trial, step) -> action
    prompt_tokens: int
    generated: int


def actions(lake, run_id: str) -> dict[tuple, str]:
    rows = lake.read("SELECT task_id, trial, step, action FROM lake.steps WHERE run_id = ?", [run_id])
    return {(r["task_id"], r["trial"], r["step"]): r["action"] for r in rows.iter_rows(named=True)}


def run(quick: bool) -> list[str]:
    from retro.agent.request import rollout_request
    from retro.agent.runner import Runner
    from retro.agent.spec import load_models, make_spec
    from retro.envs import get_env
    from retro.orchestrate.rollout import rollout
    from retro.store import Lake

    tasks, trials, steps = (4, 1, 2) if quick else (8, 2, 4)
    with tempfile.TemporaryDirectory() as tmp:
        settings = fresh_settings(Path(tmp), share_models=True, rollout={"max_steps": steps},
                                  actor={"max_new_tokens": 32})
        lake = Lake(settings)
        models = load_models(settings, rollout_request(settings, lake, mode="react"))
        actor = models.actor
        warm = settings.model_copy(update={"rollout": settings.rollout.model_copy(update={"max_steps": 1})})
        rollout(warm, lake, rollout_request(warm, lake, env="hotpotqa", split="eval", mode="react", tasks=2,
                                            trials=1, tag="warm-up"), models=models)
        env = get_env("hotpotqa", settings)
        task_ids = [t.task_id for t in env.load_tasks("eval")[:tasks]]

        def measure(tag: str, sequential: bool) -> Measured:
            start = time.perf_counter()
            groups = [[t] for t in task_ids] if sequential else [task_ids]
            taken, prompt, generated = {}, 0, 0
            for group in groups:
                spec = make_spec(settings, models, "react", "hotpotqa", "eval", group, trials, tag=tag)
                result = Runner(lake, env, actor, None, spec).run()
                taken |= actions(lake, spec.run_id)
                prompt, generated = prompt + result.prompt_tokens, generated + result.completion_tokens
            return Measured(time.perf_counter() - start, taken, prompt, generated)

        measured = {name: measure(f"bench-{i}", sequential) for i, (name, sequential) in enumerate(RUNS)}
        model = f"{actor.name} on the {settings.actor.backend} backend"
    return table(measured, tasks * trials) + [summary(measured, tasks, trials, steps, model)]


def table(measured: dict[str, Measured], episodes: int) -> list[str]:
    reference = measured[RUNS[-1][0]]
    lines = [("| runner | episodes | steps | same action as the reference | wall s | episodes/min | generated tok/s "
             "| prompt tokens | speed-up vs reference |"), "|---|---|---|---|---|---|---|---|---|"]
    for name, m in measured.items():
        same = sum(reference.steps.get(k) == v for k, v in m.steps.items())
        lines.append(f"| {name} | {episodes} | {len(m.steps)} | {same} | {m.wall:.1f} | {episodes / m.wall * 60:.2f} "
                     f"| {m.generated / m.wall:.1f} | {m.prompt_tokens:,} | {reference.wall / m.wall:.2f}x |")
    return lines


def summary(measured: dict[str, Measured], tasks: int, trials: int, steps: int, model: str) -> str:
    batched, reference = (measured[name].wall for name, _ in RUNS)
    return (f"\n**Batched runner / reference loop: {reference / batched:.2f}x.** ({tasks} HotPotQA eval tasks x "
            f"{trials} trials, max {steps} steps, react mode, greedy, 32 new tokens at most per call, {model}.)")
