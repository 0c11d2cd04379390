# ruff: noqa: F811 (fixtures imported from trainkit come back as test arguments)
"""A home copied elsewhere uses its own artifacts: the lake records adapter folders and data set files
relative to $RETRO_HOME, resolves them in the home that reads them, and reads the absolute paths of older
lakes in the current home too."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import clirun
import pytest
import toyworker
from trainkit import fill_lake, tiny_model_dir  # noqa: F401 (fixture)

from retro.config import load_settings
from retro.envs import ENVS
from retro.errors import ModelNotFoundError
from retro.store import Lake
from retro.store.registry import ModelVersion, get_model_version, list_model_versions, register_model_version
from retro.train.datasets import get_dataset_version


def moved(settings, monkeypatch, tmp_path, name: str = "copy"):
    """The home copied to another folder, which becomes RETRO_HOME; (its settings, its lake)."""
    copy = tmp_path / name
    shutil.copytree(settings.home, copy)
    monkeypatch.setenv("RETRO_HOME", str(copy))
    moved_settings = load_settings(home=copy, preset="tiny")
    return moved_settings, Lake(moved_settings)


def adapter_folder(folder) -> None:
    """What the checks before a model load want in an adapter folder: a config and weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights")


def test_paths_under_the_home_are_recorded_relative_and_others_as_given(settings, lake, tmp_path):
    inside = settings.models_dir / "adapters" / "sft-in"
    outside = tmp_path / "elsewhere" / "models" / "adapters" / "sft-out-folder"
    for model_id, folder in (("sft-in", inside), ("sft-out", outside)):
        register_model_version(lake, ModelVersion(model_id=model_id, stage="sft", base_model="embedded",
                                                  adapter_path=folder, dataset="sft", dataset_version="v"))
    stored = dict(lake.read("SELECT model_id, adapter_path FROM lake.model_versions").rows())
    assert stored == {"sft-in": "models/adapters/sft-in", "sft-out": str(outside)}
    assert get_model_version(lake, "sft-in").adapter_path == inside.resolve()
    assert get_model_version(lake, "sft-out").adapter_path == outside  # not under any home: as recorded


def test_an_older_lakes_absolute_paths_are_read_in_the_current_home(settings, lake, monkeypatch, tmp_path):
    """Rows as lakes before relative paths wrote them: absolute, in the home they were written in."""
    old = settings.home.resolve()
    adapter = old / "models" / "adapters" / "sft-old"
    data = old / "datasets" / "sft" / "v1.parquet"
    elsewhere = tmp_path / "shared" / "sft-elsewhere"
    adapter_folder(adapter)
    data.parent.mkdir(parents=True)
    data.write_bytes(b"PAR1")
    now = datetime.now(UTC)
    lake.append({
        "model_versions": [
            {"model_id": m, "stage": "sft", "base_model": "embedded", "adapter_path": str(p), "dataset": "sft",
             "dataset_version": "v1", "config": "{}", "metrics": "{}", "created_at": now}
            for m, p in (("sft-old", adapter), ("sft-elsewhere", elsewhere))],
        "dataset_versions": [{"dataset": "sft", "version": "v1", "sql_hash": "h", "snapshot_id": 1, "row_count": 1,
                              "path": str(data), "params": "{}", "created_at": now}],
    })

    copy_settings, copy_lake = moved(settings, monkeypatch, tmp_path)
    shutil.rmtree(settings.home)
    copy = copy_settings.home.resolve()
    assert get_model_version(copy_lake, "sft-old").adapter_path == copy / "models" / "adapters" / "sft-old"
    assert get_dataset_version(copy_lake, "sft", "v1").path == copy / "datasets" / "sft" / "v1.parquet"
    listed = dict(list_model_versions(copy_lake).select("model_id", "adapter_path").rows())
    assert listed == {"sft-old": str(copy / "models" / "adapters" / "sft-old"), "sft-elsewhere": str(elsewhere)}
    # the rows stay as written: the lake is append-only
    assert copy_lake.read("SELECT path FROM lake.dataset_versions").item() == str(data)


@pytest.fixture
def toy(monkeypatch):
    """The toy environment and scripted models, which note the adapter folder each model load was given."""
    import retro.agent.spec as spec_module

    loads = []

    def load_models(settings, request):
        loads.append(request.adapter_path)
        return toyworker.load_models(settings, request)

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", load_models)
    return loads


def test_a_copied_home_lists_rolls_out_and_evaluates_with_its_own_adapter(settings, lake, monkeypatch, tmp_path,
                                                                           tiny_model_dir, toy):
    # 1. a real SFT adapter trained in the original home (the tiny model, a few steps)
    for name, value in {"RETRO_PRESET": "tiny", "RETRO_RETROSPECTIVE__MODEL": str(tiny_model_dir),
                        "RETRO_RETROSPECTIVE__MAX_NEW_TOKENS": "8", "RETRO_TRAIN__MAX_LENGTH": "256",
                        "RETRO_TRAIN__BATCH_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    fill_lake(lake, n=4)
    trained = clirun.retro("train", "sft", "--json")
    assert trained.code == 0, trained.err
    (row,) = json.loads(trained.out.splitlines()[-1])
    model_id = row["model_id"]
    assert lake.read("SELECT adapter_path FROM lake.model_versions").item() == f"models/adapters/{model_id}"
    assert lake.read("SELECT path FROM lake.dataset_versions WHERE dataset = 'sft'").item().startswith("datasets/sft/")

    # 2. a copy that lost the adapter, while the original still has it: one line naming the copy's folder,
    #    never the original's files
    copy_settings, _ = moved(settings, monkeypatch, tmp_path)
    copy = copy_settings.home.resolve()
    shutil.rmtree(copy / "models" / "adapters" / model_id)
    retroformer = ("rollout", "--env", "toy", "--mode", "retroformer", "--adapter", model_id, "--tasks", "2",
                   "--trials", "2", "--json")
    missing = clirun.retro(*retroformer)
    assert f"adapter of model version {model_id} is missing at {copy}" in missing.one_line_error
    assert toy == []  # no model loaded

    # 3. the adapter restored in the copy, the original home deleted: everything works from the copy
    shutil.copytree(settings.home / "models" / "adapters" / model_id, copy / "models" / "adapters" / model_id)
    shutil.rmtree(settings.home)
    listed = clirun.retro("models", "list", "--json")
    assert listed.code == 0, listed.err
    (row,) = json.loads(listed.out.splitlines()[-1])
    assert (row["model_id"], row["adapter_path"]) == (model_id, str(copy / "models" / "adapters" / model_id))
    assert json.loads(row["metrics"])["history"]  # --json: the whole record, per-step curves included
    table = clirun.retro("models", "list")  # the terminal: the summary, not a screen of curves
    assert table.code == 0 and model_id in table.out and "history" not in table.out

    # training again in the copy finds its data set and its adapter: nothing is rebuilt or retrained
    again = clirun.retro("train", "sft", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out.splitlines()[-1])[0]["model_id"] == model_id
    assert Lake(copy_settings).read("SELECT count(*) FROM lake.dataset_versions WHERE dataset = 'sft'").item() == 1

    rolled = clirun.retro(*retroformer)
    assert rolled.code == 0, rolled.err
    assert json.loads(rolled.out.splitlines()[-1])["written"]["trials"] == 4
    evaluated = clirun.retro("eval", "--candidate", model_id, "--env", "toy", "--tasks", "3", "--trials", "2")
    assert evaluated.code == 0, evaluated.err
    assert toy == [str(copy / "models" / "adapters" / model_id)] * 2 + [None]  # rollout, candidate, base
    assert not settings.home.exists()


def test_a_missing_parent_adapter_is_one_line_before_any_model_loads(settings, lake, monkeypatch):
    """PPO from the registered reward model, whose folder is gone: named before the base model loads."""
    from retro.train import lora
    from retro.train.ppo import train_ppo

    fill_lake(lake, n=4)
    register_model_version(lake, ModelVersion(model_id="rm-gone", stage="rm", base_model="embedded",
                                              adapter_path=settings.models_dir / "adapters" / "rm-gone",
                                              dataset="reward", dataset_version="v"))
    shutil.rmtree(settings.models_dir / "adapters" / "rm-gone")
    monkeypatch.setattr(lora, "seeded_base", lambda settings: pytest.fail("a model loaded"))
    with pytest.raises(ModelNotFoundError, match=r"adapter of rm model rm-gone is missing at .*rm-gone"):
        train_ppo(settings, lake)
