"""What branches cost and what they buy: the demo's training night with one reflection per failure
(G = 1, the Reflexion protocol) and with the demo's G = 4, side by side on the same tasks.

Each night: the rollout on the demo's training tasks (embedded SmolLM2-135M for both models), then
labelling. Reported per night: wall time, tokens, trials played, ratings that are not 0, and the pairs
(chosen, rejected) the reward model gets. Sample 0 of every failure is the reflection G = 1 writes, so
the G = 4 night's main line repeats the G = 1 night: the difference is the branches alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import fresh_settings

QUICK = {"tasks": 3, "trials": 2}


def night(settings, lake, branches: int, tasks: int, trials: int) -> dict:
    from retro.agent.rating import rate_reflections
    from retro.agent.request import rollout_request
    from retro.commands.demo import ENV
    from retro.orchestrate.rollout import rollout
    from retro.train.datasets import build_dataset

    settings.rollout.reflections_per_failure = branches
    start = time.perf_counter()
    request = rollout_request(settings, lake, env=ENV, split="train", mode="reflexion", tasks=tasks, trials=trials,
                              tag=f"branches-{branches}")
    result = rollout(settings, lake, request)
    wall = time.perf_counter() - start
    rate_reflections(lake, settings.label.version)
    rated = lake.read("""
        SELECT count(*) AS n, count(*) FILTER (WHERE rating <> 0) AS nonzero,
               count(*) FILTER (WHERE rating > 0) AS positive
        FROM lake.reflection_quality WHERE run_id = ?""", [result.run_id])
    pairs = build_dataset(settings, lake, "reward_pairs").frame()
    run_pairs = pairs.filter(pairs["chosen_key"].str.starts_with(result.run_id + "/")).height
    groups = lake.read("SELECT count(*) FILTER (WHERE all_equal) AS flat, count(*) AS n FROM lake.reflection_groups "
                       "WHERE run_id = ?", [result.run_id])
    # did the actor read its memory? the branches of one failure, told apart by the actions they took
    acted = lake.read("""
        WITH path AS (
            SELECT task_id, trial, sample, string_agg(action, ' | ' ORDER BY step) AS actions
            FROM lake.steps WHERE run_id = ? AND trial > 0 GROUP BY ALL
        )
        SELECT count(*) AS n, count(*) FILTER (WHERE n_paths > 1) AS differ
        FROM (SELECT task_id, trial, count(DISTINCT actions) AS n_paths, count(*) AS n_branches FROM path GROUP BY ALL)
        WHERE n_branches > 1""", [result.run_id])
    main = lake.read("SELECT task_id, trial, episode_return FROM lake.trials WHERE run_id = ? AND sample = 0 "
                     "ORDER BY ALL", [result.run_id])
    return {"G": branches, "wall": wall, "prompt": result.prompt_tokens, "generated": result.completion_tokens,
            "trials": result.written["trials"], "rated": rated["n"][0], "nonzero": rated["nonzero"][0],
            "positive": rated["positive"][0], "pairs": run_pairs, "groups": groups.row(0), "main": main,
            "acted": acted.row(0)}


def run(quick: bool) -> list[str]:
    from retro.commands.demo import BRANCHES, ENV, TRAIN_TASKS, TRIALS, overrides
    from retro.store import Lake

    tasks, trials = (QUICK["tasks"], QUICK["trials"]) if quick else (TRAIN_TASKS, TRIALS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = fresh_settings(Path(tmp), share_models=True, **overrides())
        lake = Lake(settings)
        for branches in (1, BRANCHES):
            rows.append(night(settings, lake, branches, tasks, trials))
    one, many = rows
    same_main = one["main"].equals(many["main"])
    table = [("| G | wall s | prompt tokens | generated tokens | trials | reflections rated | ratings not 0 | "
             "positive | reward pairs | failures whose branches all ended alike |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flat, n = r["groups"]
        table.append(f"| {r['G']} | {r['wall']:.0f} | {r['prompt']:,} | {r['generated']:,} | {r['trials']} | "
                     f"{r['rated']} | {r['nonzero']} | {r['positive']} | {r['pairs']} | "
                     f"{f'{flat} of {n}' if r['G'] > 1 else '-'} |")
    return [
        (f"The demo's night: {ENV} train split, {tasks} tasks x {trials} trials, reflexion, F1 returns, embedded "
        "SmolLM2-135M as actor and retrospective model, greedy sample 0, samples 1.. at the branch temperature.\n"),
        *table, "",
        (f"**G = {BRANCHES} costs {many['wall'] / max(one['wall'], 1e-9):.1f}x the wall time and "
         f"{many['generated'] / max(one['generated'], 1):.1f}x the generated tokens of G = 1; it gives "
         f"{many['nonzero']} ratings that are not 0 (G = 1: {one['nonzero']}) and {many['pairs']} reward pairs "
         f"(G = 1: {one['pairs']}).** The main line of the G = {BRANCHES} night "
         f"{'is' if same_main else 'is NOT'} the G = 1 night's, trial for trial."),
        (f"Do the branches differ at all? In {many['acted'][1]} of the {many['acted'][0]} failures the actor took "
         f"different actions in different branches (it reads its memory); in {many['groups'][0]} of "
         f"{many['groups'][1]} the branches' returns were all equal, mostly because the 135M actor's answers score "
         "F1 0 whatever the reflection says."),
    ]
