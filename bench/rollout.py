"""Rollout throughput: the batched runner vs one episode at a time, same model, tasks and decoding.

The sequential loop is how Reflexion's and Retroformer's own code run: one task's episode steps alone,
one generate call per prompt. The batched runner steps every live episode in one generate call. Both
use greedy decoding on the embedded model, so they should take the same actions; the benchmark counts
the steps whose actions agree (padding in a batch can flip a near-tie of the logits now and then).
An untimed warm-up builds the shared-prefix cache first, so neither side pays for it; a third row
runs the batched runner with that cache off.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import fresh_settings


def actions(lake, run_id: str) -> dict[tuple, str]:
    rows = lake.read("SELECT task_id, trial, step, action FROM lake.steps WHERE run_id = ?", [run_id])
    return {(r["task_id"], r["trial"], r["step"]): r["action"] for r in rows.iter_rows(named=True)}


def run(quick: bool) -> list[str]:
    from retro.agent.rollout import load_models, make_spec, rollout
    from retro.agent.runner import Runner
    from retro.envs import get_env
    from retro.store import Lake

    tasks, trials, steps = (4, 1, 2) if quick else (8, 2, 4)
    with tempfile.TemporaryDirectory() as tmp:
        settings = fresh_settings(Path(tmp), share_models=True, rollout={"max_steps": steps},
                                  actor={"max_new_tokens": 32})
        lake = Lake(settings)
        models = load_models(settings, lake, "react")
        rollout(settings.model_copy(update={"rollout": settings.rollout.model_copy(update={"max_steps": 1})}),
                lake, env="hotpotqa", split="eval", mode="react", tasks=2, trials=1, tag="warm-up", models=models)
        cached = models.actor.settings
        models.actor.settings = cached.model_copy(update={"prefix_cache_tokens": 0})
        start = time.perf_counter()
        uncached = rollout(settings, lake, env="hotpotqa", split="eval", mode="react", tasks=tasks,
                           trials=trials, tag="bench-batched-no-prefix-cache", models=models)
        t_uncached = time.perf_counter() - start
        models.actor.settings = cached
        start = time.perf_counter()
        batched = rollout(settings, lake, env="hotpotqa", split="eval", mode="react", tasks=tasks,
                          trials=trials, tag="bench-batched", models=models)
        t_batched = time.perf_counter() - start
        env = get_env("hotpotqa", settings)
        task_ids = [t.task_id for t in env.load_tasks("eval")[:tasks]]
        start = time.perf_counter()
        seq_tokens, seq_actions = 0, {}
        for task_id in task_ids:  # one episode at a time
            spec = make_spec(settings, models, "react", "hotpotqa", "eval", [task_id], trials, tag="bench-seq")
            result = Runner(lake, env, models.actor, None, spec).run()
            seq_tokens += result.completion_tokens
            seq_actions |= actions(lake, spec.run_id)
        t_seq = time.perf_counter() - start
        batched_actions = actions(lake, batched.run_id)
        uncached_steps = len(actions(lake, uncached.run_id))
    same = sum(batched_actions.get(k) == v for k, v in seq_actions.items())
    episodes = tasks * trials

    def row(name: str, steps_: int, wall: float, tokens: int) -> str:
        return f"| {name} | {episodes} | {steps_} | {wall:.1f} | {episodes / wall * 60:.2f} | {tokens / wall:.1f} |"

    return [
        "| runner | episodes | steps | wall s | episodes/min | generated tok/s |", "|---|---|---|---|---|---|",
        row("batched", len(batched_actions), t_batched, batched.completion_tokens),
        row("sequential (one episode at a time)", len(seq_actions), t_seq, seq_tokens),
        row("batched, prefix cache off", uncached_steps, t_uncached, uncached.completion_tokens),
        (f"\n**Batched / sequential: {t_seq / t_batched:.2f}x; the shared-prefix cache: {t_uncached / t_batched:.2f}x** "
         f"({tasks} HotPotQA eval tasks x {trials} trials, max {steps} steps, react mode, greedy, embedded "
         f"SmolLM2-135M, both with the prefix cache; {same} of {len(seq_actions)} sequential steps took the same "
         "action in the batched run)."),
    ]
