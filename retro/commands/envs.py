"""`retro envs ...`: see the environments and their tasks, and play a task by hand in the terminal."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import polars as pl
import typer
from rich.text import Text

from retro.commands.common import as_text, console, print_frame, settings
from retro.envs import Environment, Task, available_envs, get_env
from retro.errors import RetroError, UnknownEnvError

app = typer.Typer(help="Environments: list them, list their tasks, play one by hand.", no_args_is_help=True)
QUIT = ("quit", "exit", ":q")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="envs")


def _show(text: str, style: str | None = None) -> None:
    """Environment text as written: observations hold brackets (the console reads no markup)."""
    console.print(as_text(text, style or ""), soft_wrap=True)


def describe_envs() -> list[dict[str, Any]]:
    """One row per (environment, split) with its task count, built-in and installed (entry points) alike;
    an environment that fails says why."""
    rows, s = [], settings()  # a settings error is the command's, not one environment's
    for name in available_envs():
        try:
            counts = get_env(name, s).splits()
        except (RetroError, ImportError, OSError) as err:  # a listing survives a missing environment
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            rows.append({"env": name, "split": None, "tasks": None, "status": f"unavailable: {reason}"})
            continue
        rows += [{"env": name, "split": split, "tasks": n, "status": "ok"} for split, n in counts.items()]
    return rows


def find_task(environment: Environment, task_id: str, split: str | None) -> Task:
    """The task with this id, in `split` or else in the first split that has it."""
    for name in [split] if split else list(environment.splits()):
        for task in environment.load_tasks(name):
            if task.task_id == task_id:
                return task
    where = f"split '{split}'" if split else "any split"
    raise UnknownEnvError(
        f"no task '{task_id}' in {environment.name} {where}: "
        f"list the ids with `retro envs tasks {environment.name} --split S`"
    )


@app.command("list")
def list_envs(as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False) -> None:
    """Each environment with its splits and task counts (and why, when one cannot load).

    Example: retro envs list
    """
    schema = {"env": pl.Utf8, "split": pl.Utf8, "tasks": pl.Int64, "status": pl.Utf8}
    df = pl.DataFrame(describe_envs(), schema=schema)
    print_frame(df, title="environments", as_json=as_json)


@app.command()
def tasks(
    env: Annotated[str, typer.Argument(help="Environment name, e.g. hotpotqa.")],
    split: Annotated[str, typer.Option(help="Split to list.")] = "eval",
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Task ids and questions of one split, sorted by id.

    Example: retro envs tasks alfworld --split valid_unseen --limit 5
    """
    found = get_env(env, settings()).load_tasks(split)
    rows = [{"task_id": t.task_id, "question": t.question} for t in found]
    df = pl.DataFrame(rows, schema={"task_id": pl.Utf8, "question": pl.Utf8})
    print_frame(df.head(limit), title=f"{env} / {split}: {df.height} tasks", as_json=as_json)


@app.command()
def play(
    env: Annotated[str, typer.Argument(help="Environment name: hotpotqa, alfworld, webshop.")],
    task: Annotated[str, typer.Option("--task", help="Task id (see `retro envs tasks`).")],
    split: Annotated[str | None, typer.Option(help="Split of the task (default: every split).")] = None,
) -> None:
    """Play one task by hand: type an action per line, read as the agent's would be; `?` shows the actions,
    `quit` or EOF stops.

    Example: retro envs play hotpotqa --task 5a7613c15542994ccc9186bf
    """
    environment = get_env(env, settings())
    chosen = find_task(environment, task, split)
    episode = environment.start(chosen)
    console.print(Text.assemble((env, "bold"), f" task {chosen.task_id} ({chosen.split}); `?` for help, `quit` to stop"))
    last_info: dict[str, Any] = {}
    try:
        _show(episode.reset())
        while True:
            sys.stdout.write("> ")
            sys.stdout.flush()
            line = sys.stdin.readline()
            action = line.strip()
            if not line or action.lower() in QUIT:
                console.print("stopped")
                return
            if action == "?":
                _show(environment.action_help)
                if last_info.get("admissible_commands"):
                    _show("admissible now: " + ", ".join(last_info["admissible_commands"]))
                continue
            if not action:
                continue
            parsed = environment.parse_action(action)  # what the runner would make of the same line
            if parsed is None:
                _show(environment.invalid_action)
                continue
            result = episode.step(parsed)
            last_info = result.info
            _show(result.observation)
            note = "  (invalid action)" if result.info.get("invalid") else ""
            _show(f"reward {result.reward:g}{'  done' if result.done else ''}{note}", style="dim")
            if result.done:
                success = bool(result.info.get("success"))
                console.print(f"episode over: return {result.reward:g}, success {success}")
                return
    finally:
        episode.close()
