"""Benchmarks, side by side in one run (ratios, not lone absolute times); rewrites bench/RESULTS.md.

    just bench                          every benchmark, full size
    just bench --quick                  every benchmark, small sizes (a few minutes on 2 cores)
    just bench --only rollout,lake      some of them
    just bench --only learning --full   the largest size, where a benchmark has one (hours)

Each benchmark is a cut-down version of the real path (nanoGPT's bench.py habit) and writes its own
section to bench/results/<n>-<name>.md; RESULTS.md is those sections in order, so running one
benchmark keeps the others' last figures (each section says when and how it was measured).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine

RESULTS = ROOT / "bench" / "results"
BENCHMARKS = {  # name -> (section number, title, module whose run(quick) returns markdown lines)
    "rollout": (1, "Rollout throughput: batched vs sequential", "rollout"),
    "generation": (2, "Generation: tokens/s vs batch size, against the memory-bandwidth bound", "generation"),
    "lake": (3, "Lake scale: building the training data sets from 10^4 to 10^6 trials", "lake_scale"),
    "training": (4, "Training: SFT step, reward-model step, PPO update", "training"),
    "orchestration": (5, "Orchestration overhead: Prefect flows vs direct calls", "orchestration"),
    "demo": (6, "The demo's wall time end to end", "demo"),
    "envs": (7, "Environments: react and reflexion on ALFWorld, WebShop and HotPotQA, with invalid actions", "envs"),
    "branches": (8, "Branches: G = 4 vs G = 1 reflections per failure on the demo's night", "branches"),
    "learning": (9, "The learning effect: trained vs frozen retrospective model on held-out HotPotQA", "learning"),
    "learning-envs": (11, "The learning effect on WebShop and ALFWorld, actions valid by construction", "learning_envs"),
    "engines": (10, "Engines: llama.cpp in-process at each encoding vs the torch engine it replaced", "engines"),
}
SIZED = {"learning"}  # benchmarks with a third, largest size (--full)


def section_path(name: str) -> Path:
    number = BENCHMARKS[name][0]
    return RESULTS / f"{number}-{name}.md"


def measure(name: str, quick: bool, full: bool = False) -> None:
    number, title, module = BENCHMARKS[name]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    bench = importlib.import_module(module)
    lines = bench.run(quick, full=True) if full and name in SIZED else bench.run(quick)
    wall = time.perf_counter() - started
    flag = " --quick" if quick else " --full" if full and name in SIZED else ""
    size = {" --quick": "--quick", " --full": "--full"}.get(flag, "full size" if name not in SIZED else "default size")
    header = [f"## {number}. {title}\n",
              (f"_{time.strftime('%Y-%m-%d')}, `just bench --only {name}{flag}` ({size}), "
              f"{wall:.0f} s, load average {load:.1f} at start._\n")]
    RESULTS.mkdir(exist_ok=True)
    section_path(name).write_text("\n".join(header + lines) + "\n")
    print("\n".join(header + lines), flush=True)


def assemble() -> str:
    parts = [(f"# Benchmark results\n\nMachine: {machine()}.\nRegenerate: `just bench` (full) or `just bench --quick`;"
             " one benchmark: `just bench --only NAME`. Sections are rewritten one by one.\n")]
    for name in sorted(BENCHMARKS, key=lambda n: BENCHMARKS[n][0]):
        path = section_path(name)
        parts.append(path.read_text() if path.exists() else
                     f"## {BENCHMARKS[name][0]}. {BENCHMARKS[name][1]}\n\nNot measured yet: `just bench --only {name}`.\n")
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        parts.append(notes.read_text())
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--full", action="store_true", help=f"the largest size of {', '.join(sorted(SIZED))} (hours)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown}: choose from {', '.join(BENCHMARKS)}")
    for name in names:
        measure(name, args.quick, args.full)
        (ROOT / "bench" / "RESULTS.md").write_text(assemble())  # after each one: a crash keeps what ran


if __name__ == "__main__":
    main()
