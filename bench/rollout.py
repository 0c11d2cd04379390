"""Rollout throughput: the batched runner vs one episode at a time, same model, tasks and decoding.

The sequential loop is how Reflexion's and Retroformer's own code run: one task's episode steps alone,
one generate call per prompt. The batched runner steps every live episode in one generate call. Both
use greedy decoding on the embedded model, so they should take the same actions; the benchmark counts
the steps whose actions agree (padding in a batch can flip a near-tie of the logits now and then).
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
    same = sum(batched_actions.get(k) == v for k, v in seq_actions.items())
    episodes = tasks * trials
    return [
        "| runner | episodes | steps | wall s | episodes/min | generated tok/s |", "|---|---|---|---|---|---|",
        (f"| batched | {episodes} | {len(batched_actions)} | {t_batched:.1f} | {episodes / t_batched * 60:.2f} | "
        f"{batched.completion_tokens / t_batched:.1f} |"),
        (f"| sequential | {episodes} | {len(seq_actions)} | {t_seq:.1f} | {episodes / t_seq * 60:.2f} | "
        f"{seq_tokens / t_seq:.1f} |"),
        (f"\n**Batched / sequential: {t_seq / t_batched:.2f}x faster** ({tasks} HotPotQA eval tasks x {trials} "
        f"trials, max {steps} steps, react mode, greedy, embedded SmolLM2-135M; {same} of {len(seq_actions)} "
        "sequential steps took the same action in the batched run)."),
    ]
