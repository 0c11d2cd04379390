"""Benchmarks, side by side in one run (ratios, not lone absolute times); rewrites bench/RESULTS.md.

    just bench            full size
    just bench --quick    a few minutes

Each benchmark is a cut-down version of the real path (nanoGPT's bench.py habit):
  1. rollout throughput: the batched runner vs one episode at a time, same model, tasks and decoding
  2. orchestration overhead: the rollout flow on Prefect vs the same function called directly
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the toy environment and scripted models live with the tests


def machine() -> str:
    versions = ", ".join(f"{n} {md.version(n)}" for n in ("torch", "transformers", "duckdb", "prefect"))
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {versions}"


def fresh_settings(tmp: Path, **overrides):
    from retro.config import load_settings

    os.environ["RETRO_HOME"] = str(tmp)
    return load_settings(home=tmp, **overrides)


def bench_rollout(quick: bool, models_home: Path) -> list[str]:
    """Batched (all live episodes per generate call) vs sequential (one episode at a time)."""
    from retro.agent.rollout import load_models, rollout
    from retro.store import Lake

    tasks, trials, steps = (4, 1, 2) if quick else (8, 2, 4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = fresh_settings(Path(tmp), rollout={"max_steps": steps}, actor={"max_new_tokens": 32})
        settings.home.joinpath("models").symlink_to(models_home)  # reuse the converted embedded model
        lake = Lake(settings)
        models = load_models(settings, lake, "react")
        start = time.perf_counter()
        batched = rollout(settings, lake, env="hotpotqa", split="eval", mode="react", tasks=tasks,
                          trials=trials, tag="bench-batched", models=models)
        t_batched = time.perf_counter() - start
        from retro.agent.rollout import make_spec
        from retro.agent.runner import Runner
        from retro.envs import get_env

        env = get_env("hotpotqa", settings)
        task_ids = [t.task_id for t in env.load_tasks("eval")[:tasks]]
        start = time.perf_counter()
        seq_tokens = 0
        for task_id in task_ids:  # how Reflexion's and Retroformer's own code run: one episode at a time
            spec = make_spec(settings, models, "react", "hotpotqa", "eval", [task_id], trials, tag="bench-seq")
            seq_tokens += Runner(lake, env, models.actor, None, spec).run().completion_tokens
        t_seq = time.perf_counter() - start
    episodes = tasks * trials
    rows.append("| runner | episodes | wall s | episodes/min | gen tok/s |")
    rows.append("|---|---|---|---|---|")
    rows.append(f"| batched | {episodes} | {t_batched:.1f} | {episodes / t_batched * 60:.2f} | "
                f"{batched.completion_tokens / t_batched:.1f} |")
    rows.append(f"| sequential | {episodes} | {t_seq:.1f} | {episodes / t_seq * 60:.2f} | {seq_tokens / t_seq:.1f} |")
    rows.append(f"\n**batched / sequential speed-up: {t_seq / t_batched:.2f}x** "
                f"({tasks} HotPotQA tasks x {trials} trial, max {steps} steps, embedded SmolLM2-135M, react mode)")
    return rows


def bench_orchestration(quick: bool) -> list[str]:
    """The same scripted rollout + label through Prefect flows and as plain calls."""
    import toyenv

    import retro.agent.rollout as rollout_module
    from retro.agent.rating import rate_reflections
    from retro.envs import ENVS
    from retro.store import Lake

    ENVS["toy"] = "toyenv:ToyEnv"
    rollout_module.load_models = lambda *a, **k: toyenv.models()
    tasks = 6 if quick else 12
    with tempfile.TemporaryDirectory() as tmp:
        settings = fresh_settings(Path(tmp))
        lake = Lake(settings)
        start = time.perf_counter()
        rollout_module.rollout(settings, lake, env="toy", split="eval", mode="reflexion", tasks=tasks, trials=3,
                               tag="direct", models=toyenv.models())
        rate_reflections(lake, "v1")
        t_direct = time.perf_counter() - start
        from prefect.testing.utilities import prefect_test_harness

        from flows.label import label_flow
        from flows.rollout import rollout_flow

        with prefect_test_harness(server_startup_timeout=180):
            rollout_flow(env="toy", split="eval", mode="reflexion", tasks=1, trials=1, tag="warm-up")
            start = time.perf_counter()
            rollout_flow(env="toy", split="eval", mode="reflexion", tasks=tasks, trials=3, tag="prefect")
            label_flow(version="v2")
            t_flow = time.perf_counter() - start
    return ["| path | wall s |", "|---|---|", f"| direct calls | {t_direct:.2f} |", f"| Prefect flows | {t_flow:.2f} |",
            f"\n**Prefect overhead: {(t_flow - t_direct) / t_flow:.0%} of the flow's wall time** on a scripted "
            f"rollout ({tasks} toy tasks x 3 trials, lake writes included; a real model's generation is "
            "minutes, so the overhead is a far smaller fraction there)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", choices=["rollout", "orchestration"], help="run one benchmark")
    args = parser.parse_args()
    from retro.config import load_settings
    from retro.llm import ensure_embedded

    models_home = ensure_embedded(load_settings()).parent
    sections = [f"# Benchmark results\n\nMachine: {machine()}.\nCommand: `just bench{' --quick' if args.quick else ''}`"
                f" ({time.strftime('%Y-%m-%d')}).\n"]
    if args.only in (None, "rollout"):
        sections += ["## 1. Rollout throughput: batched vs sequential\n", *bench_rollout(args.quick, models_home), ""]
    if args.only in (None, "orchestration"):
        sections += ["## 5. Orchestration overhead\n", *bench_orchestration(args.quick), ""]
    extra = ROOT / "bench" / "NOTES.md"
    if extra.exists():
        sections.append(extra.read_text())
    text = "\n".join(sections) + "\n"
    (ROOT / "bench" / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
