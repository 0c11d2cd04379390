"""Engines: the same reflexion rollout on llama.cpp in-process at each encoding and thread count, beside the
torch engine it replaced; and batch-1 decode against the memory-bandwidth bound of the weights.

Every row is its own `retro rollout` process on a fresh home (what a user runs: engine start and the GGUF's
re-encoding included in the wall time; the HotPotQA corpus build too, the same for every row). The torch
engine (the private kv-batch engine of retro/llm/ before this change) is run from an old checkout when
RETRO_BENCH_TORCH_CHECKOUT names one (`git worktree add /tmp/torch dc21e45`); otherwise the section has no
torch row (its last figures stay in bench/RESULTS.md's history).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

ROWS = (("q8_0", 2), ("q4_1", 2), ("f16", 2), ("bf16", 2), ("q8_0", 1))
QUICK_ROWS = (("q8_0", 2), ("q4_1", 2))
DONE = re.compile(r"(\d+) new trials in (\d+)s \(([\d.]+) tok/s\)")


NIGHT = {"RETRO_PRESET": "tiny", "RETRO_ROLLOUT__REFLECTIONS_PER_FAILURE": "4", "RETRO_ROLLOUT__MAX_STEPS": "4",
         "RETRO_ROLLOUT__HOTPOTQA_RETURN": "f1"}  # the demo's night (retro/commands/demo.py), on the train split


def rollout(checkout: Path, env: dict[str, str], tasks: int, trials: int,
            split: str = "eval") -> tuple[float, float, str]:
    """(wall s, generated tok/s, success line) of one `retro rollout` in its own process and home."""
    with tempfile.TemporaryDirectory() as home:
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("RETRO_")}
        run_env |= {"RETRO_HOME": home, "PYTHONPATH": str(checkout), **env}
        cmd = [sys.executable, "-c", "from retro.cli import main; main()", "rollout", "--env", "hotpotqa", "--split", split, "--mode",
               "reflexion", "--tasks", str(tasks), "--trials", str(trials)]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=checkout, env=run_env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    out = done.stdout + done.stderr
    found = DONE.search(out)
    if done.returncode or not found:
        raise RuntimeError(f"rollout failed ({done.returncode}): {out[-800:]}")
    success = " / ".join(re.findall(r"success after trial \d+: (\d+%)", out))
    return wall, float(found.group(3)), success


def memory_bandwidth_gbs() -> float:
    """Read bandwidth of this machine: a 512 MiB array summed (the weights stream through the cores once per
    decoded token at batch 1), best of 3."""
    import numpy as np

    data = np.ones(64 * 1024 * 1024, dtype=np.float64)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def decode_batch1(quantization: str, threads: int) -> tuple[float, int]:
    """(tokens/s decoding one sequence, bytes of the GGUF) on the engine, from llama.cpp's own timings."""
    import httpx

    from retro.config import load_settings
    from retro.llm import engine
    from retro.llm.local import model_gguf

    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(home=Path(home))
        gguf = model_gguf(settings, "embedded", quantization)
        running = engine.engine_for(engine.EngineSpec(gguf, slots=1, slot_tokens=1024, threads=threads))
        body = {"prompt": "Once upon a time", "max_tokens": 128, "temperature": 0, "ignore_eos": True}
        rates = []
        for _ in range(3):
            reply = httpx.post(running.url + "/completions", json=body, timeout=300).json()
            rates.append(reply["timings"]["predicted_per_second"])
        size = gguf.stat().st_size
        engine.stop_all()
    return max(rates), size


def run(quick: bool) -> list[str]:
    tasks, trials = (4, 2) if quick else (8, 2)
    rows = QUICK_ROWS if quick else ROWS
    lines = [(f"The same reflexion rollout (HotPotQA eval, {tasks} tasks x {trials} trials, actor and retrospective "
             "model both the embedded SmolLM2-135M), each row its own process on an empty home, one at a time.\n"),
             "| engine | encoding | threads | wall | generated tok/s | success after each trial | vs torch |",
             "|---|---|---|---|---|---|---|"]
    torch_checkout = os.environ.get("RETRO_BENCH_TORCH_CHECKOUT")
    torch_wall = None
    if torch_checkout:
        torch_wall, rate, success = rollout(Path(torch_checkout), {"RETRO_ACTOR__BACKEND": "hf",
                                                                   "RETRO_RETROSPECTIVE__BACKEND": "hf"}, tasks, trials)
        lines.append(f"| torch (private kv-batch engine, {Path(torch_checkout).name}) | bf16 | 2 | {torch_wall:.0f} s "
                     f"| {rate:.1f} | {success} | 1.00x |")
    for quantization, threads in rows:
        env = {f"RETRO_{role}__{name}": value for role in ("ACTOR", "RETROSPECTIVE")
               for name, value in (("QUANTIZATION", quantization), ("THREADS", str(threads)))}
        wall, rate, success = rollout(ROOT, env, tasks, trials)
        ratio = f"{torch_wall / wall:.2f}x" if torch_wall else "n/a"
        lines.append(f"| llama.cpp in-process | {quantization} | {threads} | {wall:.0f} s | {rate:.1f} | {success} "
                     f"| {ratio} |")
    lines += ["", (f"The demo's night ({tasks} HotPotQA train tasks x 2 trials, 4 reflections per failure each tried "
              f"by its own branch, 4 steps, Q8_0 / 2 threads): up to {tasks * 4} episodes step together, on the 8 "
              "slots of before and on one slot per episode (the default now):\n"),
              "| slots | wall | generated tok/s | vs 8 slots |", "|---|---|---|---|"]
    eight = None
    for slots in ("8", ""):
        wall, rate, _ = rollout(ROOT, {**NIGHT, "RETRO_ACTOR__SLOTS": slots, "RETRO_RETROSPECTIVE__SLOTS": slots}
                                if slots else NIGHT, tasks, 2, split="train")
        eight = eight or wall
        lines.append(f"| {slots or f'{tasks * 4} (the batch)'} | {wall:.0f} s | {rate:.1f} | {eight / wall:.2f}x |")
    bandwidth = memory_bandwidth_gbs()
    lines += ["", (f"Batch-1 decode (one sequence, 128 tokens, llama.cpp's own timings, best of 3) against the bound "
              f"of streaming the weights once per token at this machine's read bandwidth ({bandwidth:.1f} GB/s, a "
              "512 MiB array summed):\n"),
              "| encoding | threads | GGUF | tok/s | bound tok/s | of the bound |", "|---|---|---|---|---|---|"]
    for quantization, threads in rows:
        rate, size = decode_batch1(quantization, threads)
        bound = bandwidth * 1e9 / size
        lines.append(f"| {quantization} | {threads} | {size / 1e6:.0f} MB | {rate:.0f} | {bound:.0f} | "
                     f"{rate / bound:.0%} |")
    return lines
