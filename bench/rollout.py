"""Rollout throughput: the batched runner vs one episode at a time, same model, tasks and decoding.

The reference is how Reflexion's and Retroformer's own code run: one task's episode steps alone and
every call sends its whole prompt (instruction, examples, trajectory so far), which the model prefills
from scratch. The batched runner steps every live episode in one generate call, prefills the shared
instruction + examples once (the prefix cache) and, for each episode, only what its prompt adds to
its previous call (the row cache). Two more rows take those parts apart: the same caches one episode
at a time (what batching alone adds), and the batched runner without the row cache.

All runs decode greedily on the embedded model, so they should take the same actions; the benchmark
counts the steps whose action equals the reference loop's (a cached or padded row computes the same
logits up to float rounding, which can flip a near-tie now and then). An untimed warm-up builds the
shared-prefix cache first, and the row cache is emptied before every run: no run reuses another's work.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import fresh_settings

NO_CACHES = {"prefix_cache_tokens": 0, "kv_cache_mb": 0}
RUNS = [  # (row, one episode at a time?, actor settings changed from the defaults)
    ("batched runner (prefix + row caches)", False, {}),
    ("batched, row cache off", False, {"kv_cache_mb": 0}),
    ("sequential with the same caches", True, {}),
    ("sequential, no caches (the reference loop)", True, NO_CACHES),
]


@dataclass
class Measured:
    wall: float
    steps: dict[tuple, str]  # (task, trial, step) -> action
    prompt_tokens: int
    prefilled: int  # prompt tokens the model actually ran (the rest came from a cache)
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
        actor, defaults = models.actor, models.actor.settings
        warm = settings.model_copy(update={"rollout": settings.rollout.model_copy(update={"max_steps": 1})})
        rollout(warm, lake, rollout_request(warm, lake, env="hotpotqa", split="eval", mode="react", tasks=2,
                                            trials=1, tag="warm-up"), models=models)
        env = get_env("hotpotqa", settings)
        task_ids = [t.task_id for t in env.load_tasks("eval")[:tasks]]

        def measure(tag: str, sequential: bool, changes: dict) -> Measured:
            actor.settings = defaults.model_copy(update=changes)
            actor.free_caches()
            reused_before = actor.shared.rows.reused_tokens + actor.shared.prefixes.reused_tokens
            start = time.perf_counter()
            groups = [[t] for t in task_ids] if sequential else [task_ids]
            taken, prompt, generated = {}, 0, 0
            for group in groups:
                spec = make_spec(settings, models, "react", "hotpotqa", "eval", group, trials, tag=tag)
                result = Runner(lake, env, actor, None, spec).run()
                taken |= actions(lake, spec.run_id)
                prompt, generated = prompt + result.prompt_tokens, generated + result.completion_tokens
            wall = time.perf_counter() - start
            reused = actor.shared.rows.reused_tokens + actor.shared.prefixes.reused_tokens - reused_before
            return Measured(wall, taken, prompt, prompt - reused, generated)

        measured = {name: measure(f"bench-{i}", sequential, changes)
                    for i, (name, sequential, changes) in enumerate(RUNS)}
        actor.settings = defaults
    return table(measured, tasks * trials) + [summary(measured, tasks, trials, steps)]


def table(measured: dict[str, Measured], episodes: int) -> list[str]:
    reference = measured[RUNS[-1][0]]
    lines = [("| runner | episodes | steps | same action as the reference | wall s | episodes/min | generated tok/s "
             "| prompt tokens | prefilled | speed-up vs reference |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in measured.items():
        same = sum(reference.steps.get(k) == v for k, v in m.steps.items())
        lines.append(f"| {name} | {episodes} | {len(m.steps)} | {same} | {m.wall:.1f} | {episodes / m.wall * 60:.2f} "
                     f"| {m.generated / m.wall:.1f} | {m.prompt_tokens:,} | {m.prefilled:,} "
                     f"| {reference.wall / m.wall:.2f}x |")
    return lines


def summary(measured: dict[str, Measured], tasks: int, trials: int, steps: int) -> str:
    wall = {name: m.wall for name, m in measured.items()}
    batched, row_off, seq_cached, reference = (wall[name] for name, _, _ in RUNS)
    return (f"\n**Batched runner / reference loop: {reference / batched:.2f}x.** Of that, batching alone (same caches, "
            f"one episode at a time vs all together): {seq_cached / batched:.2f}x; the row cache: "
            f"{row_off / batched:.2f}x. ({tasks} HotPotQA eval tasks x {trials} trials, max {steps} steps, react mode, "
            "greedy, 32 new tokens at most per call, embedded SmolLM2-135M fp32, 2 torch threads.)")
