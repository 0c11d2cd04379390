"""Training cost of the retrospective model: seconds per SFT step, reward-model step and PPO update,
and each stage's peak memory, on the embedded SmolLM2-135M (or any HF folder), on this machine. `just bench` calls run(quick).

    .venv/bin/python bench/training.py                      # embedded model, default batch and lengths
    .venv/bin/python bench/training.py --threads 1 --rows 8 # one torch thread (shared machines)

A cut-down version of the real path (nanoGPT's bench.py habit): synthetic reflections of realistic
length go into a fresh lake, then the real train_sft / train_reward_model / train_ppo run, each in its
own process so that ru_maxrss is that stage's peak. Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("sft", "rm", "ppo")
TRAJECTORY_STEP = ("Thought {n}: I need to search {e} and find where it was founded.\n"
                   "Action {n}: Search[{e}]\n"
                   "Observation {n}: {e} is a company. It was founded in 1921 by two brothers in a small town.")


def reflection_prompt(i: int, steps: int) -> str:
    """A reflection input shaped like the agent's (instruction, task, a failed trajectory)."""
    from retro.agent import prompts

    entity = f"Entity {i}"
    trajectory = "\n".join(TRAJECTORY_STEP.format(n=n + 1, e=entity) for n in range(steps))
    return prompts.REFLECTION_INSTRUCTION.format(
        episode_return=0.0, question=f"In which year was {entity} founded, and by whom?",
        trajectory=trajectory, outcome=prompts.OUTCOME_NO_ANSWER)


def fill_lake(lake, rows: int, steps: int) -> None:
    good = "I answered before reading the page. Next time I will search the entity, read the founding line, then finish."
    bad = "I was unlucky with the search results and will try again."
    trials, reflections, ratings = [], [], []
    for i in range(rows):
        positive = i % 2 == 0
        key = {"run_id": "bench", "task_id": f"t{i}"}
        trials += [{**key, "trial": 0, "env": "hotpotqa", "episode_return": 0.0, "success": False},
                   {**key, "trial": 1, "env": "hotpotqa", "episode_return": float(positive), "success": positive}]
        reflections.append({**key, "trial": 0, "env": "hotpotqa", "prompt": reflection_prompt(i, steps),
                            "text": good if positive else bad})
        ratings.append({**key, "trial": 0, "label_version": "v1", "return_before": 0.0,
                        "return_after": float(positive), "rating": float(positive)})
    lake.append({"trials": trials, "reflections": reflections, "ratings": ratings})


def settings_for(args):
    from retro.config import load_settings

    settings = load_settings(home=Path(args.home))
    settings.retrospective.model = args.model
    settings.retrospective.max_new_tokens = args.new_tokens
    for key, value in {"batch_size": args.batch, "sft_epochs": 1.0,
                       "rm_epochs": 1.0, "ppo_epochs": args.ppo_epochs,
                       "ppo_total_episodes": args.batch * args.updates}.items():
        setattr(settings.train, key, value)
    settings.dataset.eval_fraction = 0.0  # every row trains: the step count is rows / batch
    return settings


def run_stage(args) -> dict:
    """One stage in this process; returns its timing and this process's peak RSS."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from retro.store import Lake
    from retro.train.ppo import train_ppo
    from retro.train.reward import train_reward_model
    from retro.train.sft import train_sft

    settings = settings_for(args)
    lake = Lake(settings)
    train = {"sft": train_sft, "rm": train_reward_model, "ppo": train_ppo}[args.stage]
    start = time.perf_counter()
    version = train(settings, lake)
    wall = time.perf_counter() - start
    metrics = version.metrics
    per = metrics.get("ppo/seconds_per_update") or metrics.get("train/seconds_per_step")
    steps = metrics.get("ppo/updates") or metrics.get("train/steps")
    return {"stage": args.stage, "seconds_per_step": per, "steps": steps, "wall_s": round(wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "threads": torch.get_num_threads()}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="retrospective model: 'embedded' or an HF folder")
    parser.add_argument("--home", default=None, help="RETRO_HOME to use (default: a temp dir; the embedded "
                        "model is converted into bench/out/home once)")
    parser.add_argument("--rows", type=int, default=8, help="rated reflections (half positive)")
    parser.add_argument("--steps", type=int, default=4, help="trajectory steps per reflection prompt")
    parser.add_argument("--batch", type=int, default=4, help="train.batch_size")
    parser.add_argument("--new-tokens", type=int, default=64, help="retrospective.max_new_tokens (PPO response length)")
    parser.add_argument("--updates", type=int, default=2, help="PPO updates (episodes = batch x updates)")
    parser.add_argument("--ppo-epochs", type=int, default=4, help="train.ppo_epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", default=",".join(STAGES), help="stages to time, e.g. ppo (with --home of a "
                        "run that trained sft and rm)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    return parser


def run(quick: bool) -> list[str]:
    """`just bench`'s entry: quick = 8 rows, one PPO update of one epoch."""
    argv = ["--rows", "8", "--updates", "1", "--ppo-epochs", "1"] if quick else ["--rows", "16"]
    return measure(parser().parse_args(argv))


def main() -> None:
    args = parser().parse_args()
    if args.stage:  # child process: one stage, JSON on the last line
        print(json.dumps(run_stage(args)))
        return
    print("\n".join(measure(args)))


def measure(args) -> list[str]:
    """Fill a lake with synthetic rated reflections, then time each stage in its own process."""
    from retro.config import load_settings
    from retro.store import Lake

    fresh = args.home is None
    home = Path(args.home or tempfile.mkdtemp(prefix="bench-train-"))
    if args.model == "embedded":  # convert once, into a cache that survives the temp home
        from retro.llm.embedded import ensure_embedded

        args.model = str(ensure_embedded(load_settings(home=ROOT / "bench" / "out" / "home")))
    args.home = str(home)
    settings = settings_for(args)
    lake = Lake(settings)
    lake.init()
    if fresh:
        fill_lake(lake, args.rows, args.steps)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompt_tokens = len(tokenizer.apply_chat_template([{"role": "user", "content": reflection_prompt(0, args.steps)}],
                                                      tokenize=True, add_generation_prompt=True)["input_ids"])
    rows = []
    for stage in [s for s in STAGES if s in args.only.split(",")]:
        cmd = [sys.executable, __file__, "--stage", stage] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("stage", "only") and v is not None]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(f"{stage} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    import torch
    import transformers
    import trl

    what = {"sft": "SFT step", "rm": "reward-model step", "ppo": "PPO update"}
    lines = ["| stage | s per step | steps | stage wall s | peak RSS MB | torch threads |", "|---|---|---|---|---|---|"]
    lines += [f"| {what[r['stage']]} | {r['seconds_per_step']:.2f} | {r['steps']} | {r['wall_s']} | "
              f"{r['peak_rss_mb']} | {r['threads']} |" for r in rows]
    by = {r["stage"]: r for r in rows}
    if {"sft", "ppo"} <= by.keys():
        lines.append(f"\n**A PPO update costs {by['ppo']['seconds_per_step'] / by['sft']['seconds_per_step']:.1f}x an "
                     f"SFT step and peaks at {by['ppo']['peak_rss_mb'] / by['sft']['peak_rss_mb']:.1f}x its memory.** "
                     f"Model {Path(args.model).name}, fp32, LoRA r={settings.train.lora_r}, batch {args.batch}, "
                     f"prompt {prompt_tokens} tokens; PPO: {args.new_tokens} new tokens, {args.ppo_epochs} PPO "
                     f"epochs per update; torch {torch.__version__}, transformers {transformers.__version__}, "
                     f"trl {trl.__version__}.")
    return lines


if __name__ == "__main__":
    main()
