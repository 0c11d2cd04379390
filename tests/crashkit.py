"""A rollout in a process of its own, for the crash and concurrency tests (tests/test_reliability_*.py).

    python tests/crashkit.py HOME [--delay S] [--die-in-commit N] [--branches G]

Runs the toy environment (tests/toyenv.py) with scripted models whose episodes take 1 to 4 steps and
whose tasks need one or two reflections, so trials finish, and commit, at many different moments;
each batched model call sleeps `--delay` seconds so that a kill lands mid-run. Prints `progress N`
(N = episodes done) at the start and after every commit, and `done` at the end.
`--die-in-commit N` SIGKILLs the process inside its Nth commit, after its rows are inserted and before
COMMIT: the worst moment for a crash. `--branches G` writes G reflections per failure (branch trials),
of which the sampled ones name the right word for even seeds only.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # for `toyenv` when run as a script

import toyenv

from retro.agent.request import rollout_request
from retro.agent.spec import Models
from retro.config import load_settings
from retro.envs import ENVS
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout
from retro.store import Lake

TASKS, TRIALS, MAX_STEPS = 8, 3, 6


NOISY = False  # --noisy: look around a random number of times, like a sampling model (runs differ)


def actor_policy(prompt: str) -> str:
    """Task k looks around k % 4 times, then answers with the newest remembered word once its memory
    holds enough reflections (two for k % 3 == 0, else one): success at trial 1 or 2."""
    if re.search(r"Thought \d+:$", prompt):
        return " I should look, then answer.\n"
    k = int(re.search(r"code (\d+)", prompt).group(1))
    looks = len(re.findall(r"Action \d+: Look\[\]", prompt))
    if (random.random() < 0.6 and looks < 4) if NOISY else looks < k % 4:
        return " Look[]\n"
    remembered = re.findall(r"Reflection \d+: .*?use the word (\w+)", prompt)
    need = 2 if k % 3 == 0 else 1
    return f" Finish[{remembered[-1] if len(remembered) >= need else 'nothing'}]\n"


class SlowLLM(ScriptedLLM):
    """A scripted model that takes `delay` seconds per batched call, like a real one."""

    def __init__(self, respond, name: str, delay: float):
        super().__init__(respond, name=name)
        self.delay = delay

    def generate(self, prompts, params):
        time.sleep(self.delay)
        return super().generate(prompts, params)


def sampled_retro_policy(prompt: str, seed: int | None) -> str:
    """Greedy: the right word (toyenv's perfect model); sampled: right for even seeds, else a wrong word."""
    if seed is None or seed % 2 == 0:
        return toyenv.retro_policy(prompt)
    return "I guessed. Next time use the word wrong."


def models(delay: float = 0.0, branches: int = 1) -> Models:
    retro = SlowLLM(sampled_retro_policy if branches > 1 else toyenv.retro_policy, "crash-retro", delay)
    retro.seeded = branches > 1
    return Models(SlowLLM(actor_policy, "crash-actor", delay), retro, "base")


def run(home: Path, delay: float = 0.0, progress=None, branches: int = 1):
    """The rollout every crash test compares against: same spec, hence the same run id, in any process."""
    ENVS["toy"] = "toyenv:ToyEnv"
    settings = load_settings(home=home, preset="tiny",
                             rollout={"max_steps": MAX_STEPS, "reflections_per_failure": branches})
    return rollout(settings, Lake(settings), rollout_request(settings, Lake(settings), env="toy",
                                                             split="eval", mode="reflexion",
                                                             tasks=TASKS, trials=TRIALS),
                   models=models(delay, branches), progress=progress)


def die_in_commit(n: int) -> None:
    """SIGKILL this process inside the nth commit, once its trials and steps are inserted."""
    insert = Lake._insert_new
    seen = [0]

    def dying(con, name, df):
        written = insert(con, name, df)
        if name == "steps":
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return written

    Lake._insert_new = staticmethod(dying)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--die-in-commit", type=int, default=0)
    parser.add_argument("--noisy", action="store_true")
    parser.add_argument("--branches", type=int, default=1)
    args = parser.parse_args()
    global NOISY
    NOISY = args.noisy
    if args.die_in_commit:
        die_in_commit(args.die_in_commit)
    run(args.home, args.delay, progress=lambda event: print(f"progress {event['episodes_done']}", flush=True),
        branches=args.branches)
    print("done", flush=True)


if __name__ == "__main__":
    main()
