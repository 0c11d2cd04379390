"""Served vs embedded on the CPU: the same react rollout on the embedded backend and on llama.cpp's llama-server.

The server runs the embedded SmolLM2's own weights, converted by llama.cpp's convert_hf_to_gguf.py to F32
(the same numbers) and to Q8_0 (what a CPU deployment would pick), with as many threads as torch uses and
one slot per episode. Each backend plays the rollout twice under two tags: cold (a fresh server; the embedded
model loaded, its caches empty) and warm (again, on the running server / the loaded model). Counted: wall
time, generated tokens/s, invalid actions, and the steps whose action equals the embedded cold run's.
Needs `just llama-server` (the section says so when it is not built).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import fresh_settings
from rollout import actions

OUTTYPES = ("f32", "q8_0")


@dataclass
class Played:
    wall: float
    steps: dict[tuple, str]  # (task, trial, step) -> action
    invalid: int
    generated: int
    retried: int


def request(settings, tasks: int, trials: int, tag: str = ""):
    from retro.agent.request import rollout_request
    from retro.store import Lake

    return rollout_request(settings, Lake(settings), env="hotpotqa", split="eval", mode="react", tasks=tasks,
                           trials=trials, tag=tag)


def play(settings, models, tag: str, tasks: int, trials: int) -> Played:
    from retro.orchestrate.rollout import rollout
    from retro.store import Lake

    lake = Lake(settings)
    start = time.perf_counter()
    result = rollout(settings, lake, request(settings, tasks, trials, tag), models=models)
    wall = time.perf_counter() - start
    invalid = lake.read("SELECT count(*) FROM lake.steps WHERE run_id = ? AND NOT valid", [result.run_id]).item()
    return Played(wall, actions(lake, result.run_id), invalid, result.completion_tokens, result.retried)


def home(tmp: str, name: str) -> Path:
    path = Path(tmp) / name
    path.mkdir()
    return path


def run(quick: bool) -> list[str]:
    import torch

    from retro.agent.spec import load_models
    from retro.llm import llama_cpp

    if llama_cpp.server_binary() is None:
        return [f"Not measured: llama-server is not built (`just llama-server`, into {llama_cpp.home()})."]
    tasks, trials, steps = (2, 1, 2) if quick else (8, 2, 7)
    threads = torch.get_num_threads()
    rollout_settings = {"max_steps": steps}
    played: dict[str, Played] = {}
    converted: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = fresh_settings(home(tmp, "embedded"), share_models=True, rollout=rollout_settings)
        models = load_models(settings, request(settings, tasks, trials))
        for tag in ("cold", "warm"):
            played[f"embedded, {tag}"] = play(settings, models, tag, tasks, trials)
        for outtype in OUTTYPES:
            start = time.perf_counter()
            gguf = llama_cpp.embedded_gguf(settings, outtype)  # converted once, then cached
            converted[outtype] = time.perf_counter() - start
            log = Path(tmp) / f"llama-server-{outtype}.log"
            with llama_cpp.serve(gguf, threads=threads, slots=tasks, log=log) as url:
                actor = {"backend": "openai", "model": "embedded", "base_url": url, "concurrency": tasks}
                served = fresh_settings(home(tmp, outtype), share_models=True, rollout=rollout_settings, actor=actor)
                models = load_models(served, request(served, tasks, trials))
                for tag in ("cold", "warm"):
                    played[f"llama-server {outtype.upper()}, {tag}"] = play(served, models, tag, tasks, trials)
    return table(played) + notes(played, converted, tasks, trials, steps, threads)


def table(played: dict[str, Played]) -> list[str]:
    reference = played["embedded, cold"]
    header = ("| backend | steps | invalid | same action as embedded | wall s | generated tok/s | retried "
              "| embedded cold / this (wall) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, p in played.items():
        same = sum(reference.steps.get(k) == v for k, v in p.steps.items())
        lines.append(f"| {name} | {len(p.steps)} | {p.invalid} | {same} | {p.wall:.1f} | {p.generated / p.wall:.1f} "
                     f"| {p.retried} | {reference.wall / p.wall:.2f}x |")
    return lines


def notes(played: dict[str, Played], converted: dict[str, float], tasks: int, trials: int, steps: int,
          threads: int) -> list[str]:
    from retro.llm import llama_cpp

    build = (llama_cpp.home() / "build" / "seconds")
    wall = {name: p.wall for name, p in played.items()}
    return [
        "",
        (f"**llama-server / embedded wall time: F32 cold {wall['llama-server F32, cold'] / wall['embedded, cold']:.2f}x, "
         f"warm {wall['llama-server F32, warm'] / wall['embedded, warm']:.2f}x; Q8_0 cold "
         f"{wall['llama-server Q8_0, cold'] / wall['embedded, cold']:.2f}x, warm "
         f"{wall['llama-server Q8_0, warm'] / wall['embedded, warm']:.2f}x** (above 1: the embedded backend is faster). "
         f"{tasks} HotPotQA eval tasks x {trials} trials, max {steps} steps, react, greedy; {threads} threads each; "
         f"one llama-server slot per task (`-np {tasks}`), 3072 context tokens per slot."),
        (f"llama.cpp from llama-cpp-python {llama_cpp.VERSION}'s sdist; llama-server built in "
         f"{build.read_text().strip() if build.exists() else '(not recorded)'}; GGUF conversion this run "
         + ", ".join(f"{k.upper()} {v:.0f} s" for k, v in converted.items()) + " (0 s: cached)."),
    ]
