"""Every environment played by the embedded model: react and reflexion success, and invalid actions.

10 tasks per environment, sampled with the seed and spread over the task types (ALFWorld valid_unseen: one
trial folder per task, its six types; WebShop eval goals; HotPotQA eval questions, bridge and comparison),
each at its own step budget (ALFWorld 50, WebShop 15, HotPotQA 7), greedy decoding. react runs one trial
(greedy: more would repeat it), reflexion K. An action is invalid when the environment's parser finds none
in the actor's line (unparsed) or the environment rejects the one it found (rejected).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import fresh_settings

SPLITS = (("alfworld", "valid_unseen"), ("webshop", "eval"), ("hotpotqa", "eval"))


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
    with tempfile.TemporaryDirectory() as tmp:
        picks = {"sample": tasks, "max_steps": max_steps}
        settings = fresh_settings(Path(tmp), share_models=True, rollout=picks)
        lake = Lake(settings)
        # one model: actor and retrospective share it
        reflexion = load_models(settings, rollout_request(settings, lake, mode="reflexion"))
        models = {"react": Models(reflexion.actor, None, None), "reflexion": reflexion}
        for env, split in SPLITS:
            for mode in ("react", "reflexion"):
                start = time.perf_counter()
                k = 1 if mode == "react" else trials
                result = rollout(settings, lake, rollout_request(settings, lake, env=env, split=split,
                                                                 mode=mode, trials=k,
                                                                 tag="bench-envs"), models=models[mode])
                wall = time.perf_counter() - start
                steps = lake.read("SELECT valid, observation FROM lake.steps WHERE run_id = ?",
                                  [result.run_id])
                unparsed = (steps["observation"] == env_class(env).invalid_action).sum()
                rejected = (~steps["valid"]).sum() - unparsed
                curve = " / ".join(f"{x:.0%}" for x in result.success_by_trial)
                n = max(steps.height, 1)
                lines.append(f"| {env} {split} | {mode} | {result.n_tasks} | {curve} | {steps.height} "
                             f"| {unparsed / n:.0%} | {rejected / n:.0%} | {wall:.0f} |")
                print(lines[-1], flush=True)
    budget = f"max {max_steps} steps" if max_steps else "each environment's own step budget"
    note = (f"\n{tasks} sampled tasks per environment, reflexion {trials} trials, {budget}; embedded "
            "SmolLM2-135M as actor and retrospective model, greedy. Unparsed: the environment's parser "
            "found no action in the line; rejected: the environment refused the action it found (ALFWorld: "
            "not an admissible command; WebShop: no such button; HotPotQA: an unknown verb).")
    return [*lines, note]
