"""The learning effect: does a retrospective model tuned by policy gradient beat the frozen one on
held-out tasks, with the real environment and the real models?

    just bench --only learning            the published size (about 90 min on 2 idle cores)
    just bench --only learning --quick    a check of the mechanics (under 20 min)
    just bench --only learning --full     every train and held-out question (hours)

1. One night on HotPotQA's train split: reflexion with G reflections per failure (branches), F1 returns;
   label; data sets; SFT -> reward model -> PPO (the paper's), then GRPO and RLOO from the same SFT
   adapter and reward model, and GRPO with the environment's own reward (no reward model).
2. Held-out questions x 3 trials, greedy actor, the same seed for every arm: react, reflexion (frozen
   base model), and retroformer with each candidate adapter.
3. Per arm and trial: mean F1 and exact-match success, the paired difference to reflexion with a
   bootstrap 95% CI over tasks (retro/eval/paired.py); tokens and wall / CPU time of every stage.

Resumable: everything goes to the lake in bench/out/learning-<size>/, rollouts resume by run id and a
trained stage is found again by its model id, so a stopped run continues where it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from common import bench_home, resumable_settings

SIZES = {  # train tasks, held-out tasks, held-out trials, reflections sampled by PPO (GRPO/RLOO: half as many)
    "smoke": {"train": 3, "held_out": 2, "trials": 2, "episodes": 4},  # the slow test: mechanics only
    "quick": {"train": 12, "held_out": 12, "trials": 3, "episodes": 8},
    "default": {"train": 40, "held_out": 30, "trials": 3, "episodes": 32},
    "full": {"train": 98, "held_out": 100, "trials": 3, "episodes": 256},
}
BRANCHES = 4  # reflections per failure in the training night
TAG = "learning-bench"
TRAIN_SPLITS = {"hotpotqa": "train", "webshop": "train", "alfworld": "train"}  # held out: each env's own split
POLICY_GRADIENT = ("grpo", "rloo", "grpo-env")  # beside PPO, from the same SFT adapter and reward model


@dataclass
class Stage:
    name: str
    wall: float
    cpu: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    note: str = ""


class Clock:
    """Wall and CPU seconds (all threads of this process) of each stage."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def time(self, name: str, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        stage = Stage(name, time.perf_counter() - wall, time.process_time() - cpu)
        for attr in ("prompt_tokens", "completion_tokens"):
            setattr(stage, attr, getattr(out, attr, 0))
        self.stages.append(stage)
        return out


def settings_for(home: Path, size: str, **train):
    return resumable_settings(
        home,
        rollout={"hotpotqa_return": "f1", "reflections_per_failure": BRANCHES},
        train={"ppo_total_episodes": SIZES[size]["episodes"], **train},
    )


def night(settings, lake, clock: Clock, size: str, env: str = "hotpotqa",
          trainers: tuple[str, ...] = POLICY_GRADIENT) -> dict[str, str]:
    """Step 1: the training night. Returns candidate name -> adapter model id (stages that trained)."""
    from retro.agent.rating import rate_reflections
    from retro.agent.request import rollout_request
    from retro.orchestrate.rollout import rollout
    from retro.store.registry import get_model_version
    from retro.train.datasets import build_datasets
    from retro.train.grpo import train_group
    from retro.train.pipeline import train_all

    n = SIZES[size]["train"]  # HotPotQA: the first n by id, as published; others: n spread over task types
    picked = {"tasks": n} if env == "hotpotqa" else {"sample": n}
    request = rollout_request(settings, lake, env=env, split=TRAIN_SPLITS[env], mode="reflexion", trials=2, tag=TAG,
                              **picked)
    clock.time("night rollout (train split, G=4)", rollout, settings, lake, request)
    clock.time("label", rate_reflections, lake, settings.label.version)
    trained = clock.time("data sets + SFT + reward model + PPO", train_all, settings, lake)
    candidates = {"ppo": trained["ppo"]} if trained["ppo"] else {}
    sft = get_model_version(lake, trained["sft"]) if trained["sft"] else None
    data = build_datasets(settings, lake, trained["snapshot"])
    from retro.train.result import Skipped

    sft_parent = sft or Skipped("sft", trained["skipped"].get("sft", "skipped"))
    rm_parent = get_model_version(lake, trained["rm"]) if trained["rm"] else Skipped("rm", trained["skipped"]["rm"])
    rewards = {"grpo": "model", "rloo": "model", "grpo-env": "environment"}
    for name, reward in ((n, rewards[n]) for n in trainers):
        trainer = name.split("-")[0]
        # half PPO's episodes: a GRPO/RLOO step costs about what a PPO update does on this CPU (26 s vs 67 s
        # at 4 reflections, but 4 steps per batch of samples), so the three of them fit the bench's time
        update = {"trainer": trainer, "reward": reward, "ppo_total_episodes": max(SIZES[size]["episodes"] // 2, 4)}
        s = settings.model_copy(update={"train": settings.train.model_copy(update=update)})
        prompts = data["replay"] if reward == "environment" else data["ppo"]
        out = clock.time(f"{name}: {trainer.upper()} on the {reward} reward", train_group, s, lake, prompts,
                         sft=sft_parent, reward_model=rm_parent)
        if not isinstance(out, Skipped):
            candidates[name] = out.model_id
    if not candidates and sft is not None:
        candidates["sft"] = sft.model_id
    return candidates


def evaluate(settings, lake, clock: Clock, size: str, candidates: dict[str, str], env: str = "hotpotqa") -> dict[str, str]:
    """Step 2: every arm on the same held-out tasks. Returns arm name -> run id."""
    from retro.agent.request import held_out_request, with_mode
    from retro.agent.spec import load_models
    from retro.orchestrate.promote import held_out_settings
    from retro.orchestrate.rollout import rollout

    s = held_out_settings(settings)  # the Reflexion protocol: one greedy reflection per failure
    request = held_out_request(s, lake, env=env, tasks=SIZES[size]["held_out"], trials=SIZES[size]["trials"],
                               tag=TAG)
    arms = {}
    for name, mode, adapter in [("react", "react", None), ("reflexion", "reflexion", None),
                                *((f"retroformer {c}", "retroformer", m) for c, m in candidates.items())]:
        arm = with_mode(s, lake, request, mode, adapter)
        models = load_models(s, arm)
        result = clock.time(f"held-out: {name}", rollout, s, lake, arm, models=models)
        arms[name] = result.run_id
    return arms


def ratings_lines(lake) -> list[str]:
    rated = lake.read("""
        SELECT count(*) AS n, count(*) FILTER (WHERE rating > 0) AS positive, count(*) FILTER (WHERE rating < 0)
               AS negative, count(*) FILTER (WHERE rating = 0) AS zero, round(avg(rating), 4) AS mean
        FROM lake.reflection_quality q JOIN lake.runs r USING (run_id) WHERE r.split = 'train'""")
    groups = lake.read("""
        SELECT count(*) AS groups, count(*) FILTER (WHERE NOT all_equal) AS with_contrast,
               count(*) FILTER (WHERE best_beats_greedy) AS best_beats_sample_0
        FROM lake.reflection_groups g JOIN lake.runs r USING (run_id) WHERE r.split = 'train'""")
    pairs = lake.read("SELECT row_count FROM lake.dataset_versions WHERE dataset = 'reward_pairs' "
                      "ORDER BY snapshot_id DESC LIMIT 1")
    n, pos, neg, zero, mean = rated.row(0)
    g, contrast, beats = groups.row(0)
    return [(f"Training night ratings: {n} reflections rated, {pos} positive, {zero} zero, {neg} negative (mean "
            f"{mean}); {g} failures with {BRANCHES} branches each, {contrast} whose branches ended differently, "
            f"{beats} where the best of {BRANCHES} beat sample 0; "
            f"{pairs['row_count'][0] if pairs.height else 0} reward pairs.")]


def verdict(table: pl.DataFrame) -> list[str]:
    """One line per candidate: the difference to reflexion after the last trial, and what its CI says."""
    last = table.filter(pl.col("trial") == table["trial"].max()).filter(pl.col("arm").str.starts_with("retroformer"))
    lines = []
    for arm, d, lo, hi, ds, dslo, dshi in last.select("arm", "d_f1", "d_f1_lo", "d_f1_hi", "d_success",
                                                       "d_success_lo", "d_success_hi").iter_rows():
        says = "a gain" if lo > 0 else "a loss" if hi < 0 else "no difference it can tell from zero"
        lines.append(f"- **{arm} - reflexion after the last trial: F1 {d:+.3f} [{lo:+.3f}, {hi:+.3f}], success "
                     f"{ds:+.3f} [{dslo:+.3f}, {dshi:+.3f}]**: {says}.")
    return lines


def run(quick: bool, full: bool = False, size: str | None = None, home: Path | None = None, env: str = "hotpotqa",
        trainers: tuple[str, ...] = POLICY_GRADIENT) -> list[str]:
    """The section's lines; `size` and `home` are for the test (default: by the flags, in bench/out/); `env` and
    `trainers` for the per-environment section (learning_envs.py)."""
    from retro.eval.paired import compare_arms
    from retro.eval.report import comparison_table
    from retro.store import Lake

    size = size or ("full" if full else "quick" if quick else "default")
    name = f"learning-{size}" if env == "hotpotqa" else f"learning-{env}-{size}"
    home = home or bench_home(name)
    settings = settings_for(home, size)
    lake = Lake(settings)
    clock = Clock()
    candidates = night(settings, lake, clock, size, env, trainers)
    arms = evaluate(settings, lake, clock, size, candidates, env)
    table = compare_arms(lake, arms)
    return [
        (f"Size `{size}`: {SIZES[size]['train']} {env} {TRAIN_SPLITS[env]} tasks x 2 trials with {BRANCHES} "
        f"reflections per failure{' (F1 returns)' if env == 'hotpotqa' else ''}; PPO samples "
        f"{SIZES[size]['episodes']} reflections, {', '.join(trainers) or 'no other trainer'} half as many; "
        f"{SIZES[size]['held_out']} held-out tasks x {SIZES[size]['trials']} trials per arm, greedy actor and "
        f"retrospective model, embedded SmolLM2-135M for both. Lake: `bench/out/{name}/`.\n"),
        *markdown(comparison_table(table)), "",
        *verdict(table), "",
        *ratings_lines(lake), "",
        "| stage | wall s | CPU s | prompt tokens | generated tokens |", "|---|---|---|---|---|",
        *(f"| {s.name} | {s.wall:.0f} | {s.cpu:.0f} | {s.prompt_tokens:,} | {s.completion_tokens:,} |"
          for s in clock.stages),
        "",
        "Candidates (model ids, lineage in `retro sql \"SELECT * FROM lake.model_lineage\"`): "
        + ", ".join(f"{k} = `{v}`" for k, v in candidates.items()),
    ]


def markdown(df: pl.DataFrame) -> list[str]:
    """A polars frame as a markdown table."""
    return [" | ".join(["", *df.columns, ""]).strip(), "|" + "---|" * len(df.columns),
            *(" | ".join(["", *(str(v) for v in row), ""]).strip() for row in df.iter_rows())]
