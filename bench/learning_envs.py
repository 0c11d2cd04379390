"""The learning effect where actions are valid by construction: the learning bench (learning.py) on WebShop
(graded score in [0, 1]) and ALFWorld, the embedded actor decoding its actions within what each page or game
state allows (actor.constrain_actions, on by default for the embedded actor). PPO (the paper's) and GRPO on
the environment's own reward; `RETRO_BENCH_LEARNING_ENVS=webshop,alfworld` picks the environments.
"""

from __future__ import annotations

import os

import learning

TRAINERS = ("grpo-env",)  # beside PPO: the trainer that needs no reward model


def run(quick: bool) -> list[str]:
    lines: list[str] = []
    for env in os.environ.get("RETRO_BENCH_LEARNING_ENVS", "webshop").split(","):
        lines += [f"### {env}\n", *learning.run(quick, env=env.strip(), trainers=TRAINERS), ""]
    return lines
