"""Orchestration overhead: the rollout and label flows on Prefect vs the same functions called directly."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import fresh_settings


def run(quick: bool) -> list[str]:
    """The same scripted rollout + label through Prefect flows and as plain calls, alternated (the median
    of `rounds` each), so warm-up and a busy machine's noise fall on both sides alike."""
    import statistics

    import toyenv
    from prefect.testing.utilities import prefect_test_harness

    import retro.agent.spec as spec_module
    from flows.label import label_flow
    from flows.rollout import rollout_flow
    from retro.agent.rating import rate_reflections
    from retro.agent.request import rollout_request
    from retro.envs import ENVS
    from retro.orchestrate.rollout import rollout
    from retro.store import Lake

    ENVS["toy"] = "toyenv:ToyEnv"
    spec_module.load_models = lambda *a, **k: toyenv.models()
    tasks, rounds = (6, 2) if quick else (12, 3)
    direct, flows = [], []
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        settings = fresh_settings(Path(tmp))
        lake = Lake(settings)
        rollout_flow(env="toy", split="eval", mode="reflexion", tasks=1, trials=1, tag="warm-up")
        for i in range(rounds):
            start = time.perf_counter()
            rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion",
                                                    tasks=tasks, trials=3, tag=f"direct-{i}"),
                    models=toyenv.models())
            rate_reflections(lake, f"direct-{i}")
            direct.append(time.perf_counter() - start)
            start = time.perf_counter()
            rollout_flow(env="toy", split="eval", mode="reflexion", tasks=tasks, trials=3, tag=f"prefect-{i}")
            label_flow(version=f"prefect-{i}")
            flows.append(time.perf_counter() - start)
    t_direct, t_flow = statistics.median(direct), statistics.median(flows)
    extra = t_flow - t_direct
    real = real_rollout_seconds()
    against = (f"; against the real-model batched rollout of section 1 ({real:.0f} s) it is {extra / real:.1%}"
               if real else "")
    return ["| path | median wall s | runs |", "|---|---|---|",
            f"| direct calls | {t_direct:.2f} | {', '.join(f'{x:.2f}' for x in direct)} |",
            f"| Prefect flows | {t_flow:.2f} | {', '.join(f'{x:.2f}' for x in flows)} |",
            (f"\n**Prefect adds {extra:.1f} s per rollout + label pair of flow runs{against}.** On this toy "
             f"workload ({tasks} scripted tasks x 3 trials, lake writes included, median of {rounds} alternated "
             f"runs) that fixed cost is {extra / t_flow:.0%} of the wall time: tasks are coarse (a batch of "
             "episodes, a training stage), so it is paid a few times per night, not per LLM call.")]


def real_rollout_seconds() -> float | None:
    """The batched real-model rollout's wall time from section 1's last results, if measured."""
    import re

    from rollout import RUNS

    path = Path(__file__).resolve().parent / "results" / "1-rollout.md"
    row = rf"^\| {re.escape(RUNS[0][0])} \| \d+ \| \d+ \| \d+ \| ([\d.]+) \|"  # runner, episodes, steps, same, wall
    match = re.search(row, path.read_text(), re.MULTILINE) if path.exists() else None
    return float(match.group(1)) if match else None
