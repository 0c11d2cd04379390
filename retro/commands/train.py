"""`retro train ...`: build the versioned datasets and train the retrospective model (sft -> rm -> ppo).

Each command loads Settings, calls one retro.train function and prints a table (or JSON with --json).
retro.train is imported inside the commands, so `retro --help` does not pay for torch.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import polars as pl
import typer
from rich.text import Text

from retro.commands.common import console, metrics_summary, print_frame, settings

app = typer.Typer(help="Train the retrospective model: datasets, SFT, reward model, PPO.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VersionOpt = Annotated[str | None, typer.Option("--dataset-version", help="A registered dataset version "
                                                   "(default: build one from the current lake).")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")


def _lake():
    from retro.store import Lake

    return Lake(settings())


def _show_stage(result: Any, as_json: bool) -> None:
    """A ModelVersion as one row, or a Skipped as one yellow sentence (exit code 0: skipping is normal)."""
    from retro.train.result import Skipped

    if isinstance(result, Skipped):
        if as_json:
            sys.stdout.write(json.dumps({"stage": result.stage, "skipped": result.reason}) + "\n")
        else:
            console.print(Text.assemble(("skipped", "yellow"), " ", result.reason))
        return
    row = {"model_id": result.model_id, "stage": result.stage, "dataset_version": result.dataset_version,
           "parent_model_id": result.parent_model_id, "adapter_path": str(result.adapter_path),
           "metrics": json.dumps(result.metrics, sort_keys=True, default=str) if as_json
           else metrics_summary(result.metrics)}
    print_frame(pl.DataFrame([row]), title=f"{result.stage} model", as_json=as_json)


def _dataset(lake, name: str, version: str | None):
    from retro.train.datasets import get_dataset_version

    return get_dataset_version(lake, name, version) if version else None


@app.command("build-datasets")
def build_datasets_cmd(
    snapshot: Annotated[int | None, typer.Option("--snapshot", help="Read the lake as of this snapshot.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the sft, reward and ppo datasets (datasets/*.sql) at one lake snapshot; idempotent.

    Example: retro train build-datasets --snapshot 12
    """
    from retro.train.datasets import build_datasets

    lake = _lake()
    built = build_datasets(lake.settings, lake, snapshot)
    rows = [{"dataset": d.dataset, "version": d.version, "snapshot_id": d.snapshot_id, "rows": d.row_count,
             "path": str(d.path)} for d in built.values()]
    print_frame(pl.DataFrame(rows), title="datasets", as_json=as_json)


@app.command()
def sft(dataset_version: VersionOpt = None, as_json: JsonOpt = False) -> None:
    """Fine-tune a LoRA adapter on the positively rated reflections (trl SFTTrainer).

    Example: retro train sft
    """
    from retro.train.sft import train_sft

    lake = _lake()
    _show_stage(train_sft(lake.settings, lake, _dataset(lake, "sft", dataset_version)), as_json)


@app.command()
def rm(dataset_version: VersionOpt = None, as_json: JsonOpt = False) -> None:
    """Train the reward model (a classifier of reflections that led to success) and report held-out accuracy.

    Example: retro train rm
    """
    from retro.train.reward import train_reward_model

    lake = _lake()
    _show_stage(train_reward_model(lake.settings, lake, _dataset(lake, "reward", dataset_version)), as_json)


@app.command()
def ppo(
    dataset_version: VersionOpt = None,
    sft_model: Annotated[str | None, typer.Option("--sft", help="SFT model id (default: the newest).")] = None,
    rm_model: Annotated[str | None, typer.Option("--rm", help="Reward model id (default: the newest).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """PPO of the SFT policy against the reward model (trl.experimental.ppo, LoRA only).

    Example: retro train ppo --sft sft-20250101-020000-a1b2c3 --rm rm-20250101-020500-d4e5f6
    """
    from retro.train.ppo import train_ppo

    lake = _lake()
    result = train_ppo(lake.settings, lake, _dataset(lake, "ppo", dataset_version), sft=sft_model,
                       reward_model=rm_model)
    _show_stage(result, as_json)


@app.command("all")
def all_cmd(
    snapshot: Annotated[int | None, typer.Option("--snapshot", help="Read the lake as of this snapshot.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the datasets at one snapshot, then SFT -> reward model -> PPO (skipping stages without data).

    Example: retro train all
    """
    from retro.train.pipeline import train_all

    lake = _lake()
    result = train_all(lake.settings, lake, snapshot)
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        return
    rows = [{"stage": stage, "model_id": result[stage] or "", "skipped": result["skipped"].get(stage, "")}
            for stage in ("sft", "rm", result["trainer"])]
    print_frame(pl.DataFrame(rows), title=f"train at snapshot {result['snapshot']}")
    console.print(f"candidate: {result['candidate'] or 'none'}")
