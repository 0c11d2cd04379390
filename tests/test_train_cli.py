"""`retro train ...` through the real command (CliRunner): datasets, skipped stages, unknown ids."""

from __future__ import annotations

import json

from trainkit import fill_lake
from typer.testing import CliRunner

from retro.cli import app

runner = CliRunner()


def test_every_train_command_has_help_with_an_example():
    import typer.main

    group = typer.main.get_command(app).commands["train"]
    assert set(group.commands) == {"build-datasets", "sft", "rm", "ppo", "all"}
    for name, command in group.commands.items():
        assert command.help and "Example: retro train" in command.help, name


def test_build_datasets_twice_gives_the_same_versions(lake):
    fill_lake(lake, n=4)
    first = runner.invoke(app, ["train", "build-datasets", "--json"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    rows = json.loads(first.output)
    assert {r["dataset"]: r["rows"] for r in rows} == {"sft": 2, "reward": 4, "reward_pairs": 0, "ppo": 4, "replay": 0}
    again = runner.invoke(app, ["train", "build-datasets", "--json"], catch_exceptions=False)
    assert [r["version"] for r in json.loads(again.output)] == [r["version"] for r in rows]


def test_all_on_one_class_data_skips_every_stage_and_exits_zero(lake):
    fill_lake(lake, n=3, positive_every=0)
    result = runner.invoke(app, ["train", "all", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["candidate"] is None and set(out["skipped"]) == {"sft", "rm", "ppo"}
    table = runner.invoke(app, ["train", "rm"], catch_exceptions=False)
    assert table.exit_code == 0 and "skip reward model: 0 positive of 3 ratings" in table.output


def test_unknown_dataset_version_is_one_line_error(lake):
    from retro.errors import RetroError

    result = runner.invoke(app, ["train", "sft", "--dataset-version", "nope"])
    assert result.exit_code != 0 and isinstance(result.exception, RetroError)
    assert "retro train build-datasets" in str(result.exception)
