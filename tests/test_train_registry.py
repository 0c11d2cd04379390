"""The model registry: register, look up, list with the promoted flag, promote."""

from __future__ import annotations

import json
import math

import pytest

from retro.errors import RetroError
from retro.store.registry import (
    CONFIG_FILE,
    METRICS_FILE,
    ModelVersion,
    get_model_version,
    latest_model_version,
    list_model_versions,
    promote,
    promoted_model,
    register_model_version,
)


def _version(settings, model_id: str, stage: str = "sft", **metrics) -> ModelVersion:
    return ModelVersion(model_id=model_id, stage=stage, base_model="embedded",
                        adapter_path=settings.models_dir / "adapters" / model_id, dataset="sft",
                        dataset_version="abc123", config={"train": {"seed": 0}}, metrics=metrics)


def test_register_get_and_card_next_to_the_adapter(settings, lake):
    version = _version(settings, "sft-1", **{"train/loss": 1.5, "val/ratio_var": math.nan})
    assert register_model_version(lake, version) == 1
    assert register_model_version(lake, version) == 0  # idempotent by model_id
    got = get_model_version(lake, "sft-1")
    assert got.stage == "sft" and got.dataset_version == "abc123" and got.metrics["train/loss"] == 1.5
    assert got.metrics["val/ratio_var"] is None  # NaN stored as null: valid JSON
    assert json.loads((version.adapter_path / CONFIG_FILE).read_text()) == {"train": {"seed": 0}}
    assert json.loads((version.adapter_path / METRICS_FILE).read_text())["train/loss"] == 1.5


def test_unknown_model_id_is_one_line_naming_the_list_command(lake):
    with pytest.raises(RetroError) as err:
        get_model_version(lake, "nope")
    assert "retro models list" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RetroError):
        promote(lake, "nope", "test")


def test_list_and_promote(settings, lake):
    assert promoted_model(lake) is None
    assert list_model_versions(lake).is_empty()
    for model_id, stage in (("sft-1", "sft"), ("rm-1", "rm"), ("ppo-1", "ppo"), ("ppo-2", "ppo")):
        register_model_version(lake, _version(settings, model_id, stage))
    assert latest_model_version(lake, "ppo").model_id == "ppo-2"
    assert latest_model_version(lake, "ppo", base_model="other") is None

    assert promote(lake, "ppo-1", "first") == 1
    assert promoted_model(lake).model_id == "ppo-1"
    promote(lake, "ppo-2", "better on eval")
    assert promoted_model(lake).model_id == "ppo-2"
    frame = list_model_versions(lake)
    assert frame["promoted"].to_list() == [False, False, False, True]
    assert {"model_id", "stage", "dataset_version", "adapter_path", "metrics", "created_at"} <= set(frame.columns)
    rows = lake.read("SELECT model_id, previous_model_id FROM lake.promotions ORDER BY promoted_at").rows()
    assert rows == [("ppo-1", None), ("ppo-2", "ppo-1")]
