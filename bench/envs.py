"""Every environment played by the embedded model, its actions free (the paper's ReAct) and valid by construction
(actor.constrain_actions: the action line decoded within the actions the environment says exist).

Sampled tasks, spread over the task types (ALFWorld valid_unseen: one trial folder per task, its six types;
WebShop eval goals; HotPotQA eval questions), reflexion with K trials (trial 0 is exactly what react plays:
the same greedy prompt with an empty memory), greedy decoding. An action is invalid when the environment's
parser finds none in the actor's line (unparsed) or the environment rejects the one it found (rejected).
Score: the mean return after the last trial (WebShop's graded shopping score, HotPotQA's exact match,
ALFWorld's win). The constraint's cost is the wall time per step, on against off.

Resumable: the rollouts go to a lake under bench/out/, so a stopped run continues where it was; each row's
wall time is summed over the runs that worked on it (walls.json beside the lake).
"""

from __future__ import annotations

import json
import time

from common import bench_home, resumable_settings

# environment, split, tasks, max steps (None: the environment's own: HotPotQA 7, WebShop 15, ALFWorld 50)
FULL = (("hotpotqa", "eval", 10, None), ("webshop", "eval", 10, None), ("alfworld", "valid_unseen", 4, 20))
QUICK = (("hotpotqa", "eval", 2, 5), ("webshop", "eval", 2, 5), ("alfworld", "valid_unseen", 2, 5))


def run(quick: bool) -> list[str]:
    from retro.agent.request import rollout_request
    from retro.agent.spec import load_models
    from retro.envs import env_class
    from retro.llm import engine
    from retro.orchestrate.rollout import rollout
    from retro.store import Lake

    trials = 2
    lines = [
        ("| environment | actions | tasks | max steps | success after each trial | score | steps | unparsed | rejected "
        "| wall s | s per step |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    home = bench_home("envs-quick" if quick else "envs-constrained")
    walls_file = home / "walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
    for env, split, tasks, max_steps in QUICK if quick else FULL:
        per_step = {}
        for constrained in (False, True):
            settings = resumable_settings(home, rollout={"sample": tasks, "max_steps": max_steps},
                                          actor={"constrain_actions": constrained})
            lake = Lake(settings)
            request = rollout_request(settings, lake, env=env, split=split, mode="reflexion", trials=trials,
                                      tag="bench-envs")
            start = time.perf_counter()
            result = rollout(settings, lake, request, models=load_models(settings, request))
            walls[result.run_id] = walls.get(result.run_id, 0.0) + time.perf_counter() - start
            walls_file.write_text(json.dumps(walls, indent=1))
            steps = lake.read("SELECT valid, observation FROM lake.steps WHERE run_id = ? AND sample = 0",
                              [result.run_id])
            score = lake.read("""SELECT avg(episode_return) FROM lake.trials t WHERE run_id = ? AND sample = 0
                                 AND trial = (SELECT max(trial) FROM lake.trials u WHERE u.run_id = t.run_id
                                              AND u.task_id = t.task_id AND u.sample = 0)""",
                              [result.run_id]).item()
            unparsed = (steps["observation"] == env_class(env).invalid_action).sum()
            rejected = (~steps["valid"]).sum() - unparsed
            curve = " / ".join(f"{x:.0%}" for x in result.success_by_trial)
            n = max(steps.height, 1)
            per_step[constrained] = walls[result.run_id] / n
            lines.append(f"| {env} {split} | {'valid by construction' if constrained else 'free (paper)'} "
                         f"| {result.n_tasks} | {max_steps or env_class(env).max_steps} | {curve} | {score:.3f} "
                         f"| {steps.height} | {unparsed / n:.0%} | {rejected / n:.0%} | {walls[result.run_id]:.0f} "
                         f"| {per_step[constrained]:.2f} |")
            print(lines[-1], flush=True)
            engine.stop_all()  # the next row's settings may start another engine
        lines.append(f"| {env} | constraint's cost per step | | | | | | | | | "
                     f"{per_step[True] / per_step[False]:.2f}x |")
    note = (f"\nReflexion, {trials} trials, greedy; embedded SmolLM2-135M (llama.cpp in-process, Q8_0) as actor and "
            "retrospective model. Unparsed: the environment's parser found no action in the line; rejected: "
            "the environment refused the action it found (ALFWorld: not an admissible command; WebShop: no such "
            "button; HotPotQA: an unknown verb). Steps and invalid rates count main lines (sample 0).")
    return [*lines, note]
