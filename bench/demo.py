"""The main job's wall time: `retro demo` end to end in a fresh RETRO_HOME, as a user runs it.

The converted embedded model is linked in (its one-time GGUF conversion, about 20 s, is timed on its
own as the first row), so the figure is the pipeline's: rollouts, labels, data sets, SFT, reward
model, PPO, evaluation, the mode comparison and the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, fresh_settings


def timed_cli(args: list[str], home: Path) -> tuple[float, str]:
    # as a user runs it: none of this process's Prefect or retro settings (earlier benchmarks set some)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETRO_"))}
    env["RETRO_HOME"] = str(home)
    start = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).parent / "retro"), *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"retro {' '.join(args)} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return wall, out.stdout + out.stderr


def run(quick: bool) -> list[str]:
    args = ["demo", "--tasks", "2", "--trials", "2", "--train-tasks", "4"] if quick else ["demo"]
    with tempfile.TemporaryDirectory() as tmp:
        convert_home = Path(tmp) / "convert"
        convert, _ = timed_cli(["models", "check"], convert_home)
        shutil.rmtree(convert_home)
        home = Path(tmp) / "demo"
        home.mkdir()
        fresh_settings(home, share_models=True)
        load_before = os.getloadavg()[0]
        wall, output = timed_cli(args, home)
        load_after = os.getloadavg()[0]
        keep = ROOT / "bench" / "out" / "demo-home"  # git-ignored: the demo's lake and report, to look at
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(home, keep, symlinks=True, ignore=shutil.ignore_patterns("models", "prefect"))
    table = [line for line in output.splitlines() if line.startswith(("┃", "│", "┏", "┡", "└"))]
    return [
        "| step | wall s |", "|---|---|",
        f"| embedded model: GGUF -> HF cache, once per home (`retro models check`) | {convert:.0f} |",
        f"| `retro {' '.join(args)}` end to end | {wall:.0f} |",
        (f"\n**`retro {' '.join(args)}`: {wall / 60:.1f} min** (goal: under 10 min on 2 idle cores; load average "
        f"{load_before:.1f} before, {load_after:.1f} after). Its table:\n"),
        "```", *table, "```",
    ]
