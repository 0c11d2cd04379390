"""Every environment played by the embedded model: react and reflexion success, and invalid actions.

10 tasks per environment, sampled with the seed and spread over the task types (ALFWorld valid_unseen: one
trial folder per task, its six types; WebShop eval goals; HotPotQA eval questions, bridge and comparison),
each at its own step budget (ALFWorld 50, WebShop 15, HotPotQA 7), greedy decoding. react runs one trial
(greedy: more would repeat it), reflexion K. An action is invalid when the environment's parser finds none
in the actor's line (unparsed) or the environment rejects the one it found (rejected).

Resumable: the rollouts go to a lake under bench/out/, so a stopped run continues where it was; each row's
wall time is summed over the runs that worked on it (walls.json beside the lake).
"""

from __future__ import annotations

import json
import time

from common import bench_home, resumable_settings

SPLITS = (("hotpotqa", "eval"), ("webshop", "eval"), ("alfworld", "valid_unseen"))  # quickest first


def run(quick: bool) -> list[str]:
    from retro.agent.request import rollout_request
    from retro.agent.spec import Models, load_models
    from retro.envs import env_class
    from retro.orchestrate.rollout import rollout
    from retro.store import Lake

    tasks, trials, max_steps = (2, 2, 5) if quick else (10, 3, None)
    lines = [
        "| environment | mode | tasks | success after each trial | steps | unparsed | rejected | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    home = bench_home("envs-quick" if quick else "envs")
    walls_file = home / "walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
    settings = resumable_settings(home, rollout={"sample": tasks, "max_steps": max_steps})
    lake = Lake(settings)
    # one model: actor and retrospective share it
    reflexion = load_models(settings, rollout_request(settings, lake, mode="reflexion"))
    models = {"react": Models(reflexion.actor, None, None), "reflexion": reflexion}
    for env, split in SPLITS:
        for mode in ("react", "reflexion"):
            request = rollout_request(settings, lake, env=env, split=split, mode=mode,
                                      trials=1 if mode == "react" else trials, tag="bench-envs")
            start = time.perf_counter()
            result = rollout(settings, lake, request, models=models[mode])
            walls[result.run_id] = walls.get(result.run_id, 0.0) + time.perf_counter() - start
            walls_file.write_text(json.dumps(walls, indent=1))
            steps = lake.read("SELECT valid, observation FROM lake.steps WHERE run_id = ?", [result.run_id])
            unparsed = (steps["observation"] == env_class(env).invalid_action).sum()
            rejected = (~steps["valid"]).sum() - unparsed
            curve = " / ".join(f"{x:.0%}" for x in result.success_by_trial)
            n = max(steps.height, 1)
            lines.append(f"| {env} {split} | {mode} | {result.n_tasks} | {curve} | {steps.height} "
                         f"| {unparsed / n:.0%} | {rejected / n:.0%} | {walls[result.run_id]:.0f} |")
            print(lines[-1], flush=True)
    budget = f"max {max_steps} steps" if max_steps else "each environment's own step budget"
    note = (f"\n{tasks} sampled tasks per environment, reflexion {trials} trials, {budget}; embedded "
            "SmolLM2-135M as actor and retrospective model, greedy. Unparsed: the environment's parser "
            "found no action in the line; rejected: the environment refused the action it found (ALFWorld: "
            "not an admissible command; WebShop: no such button; HotPotQA: an unknown verb).")
    return [*lines, note]
