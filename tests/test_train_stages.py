# ruff: noqa: F811 (fixtures imported from trainkit come back as test arguments)
"""SFT, reward model and PPO each train a few steps of a tiny random Llama on CPU; their adapters
reload and change the model; empty or one-class data skips a stage instead of failing."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from trainkit import fill_lake, one_thread, prompt_for, tiny_model_dir, train_settings  # noqa: F401 (fixtures)

from retro.store.registry import ModelVersion, list_model_versions
from retro.train import lora
from retro.train.pipeline import train_all
from retro.train.ppo import save_standalone_adapter, train_ppo
from retro.train.result import Skipped
from retro.train.reward import reward_text, score_texts, stratified_split, train_reward_model
from retro.train.sft import train_sft

pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits


def _lora_b_nonzero(adapter_path) -> bool:
    weights = load_file(str(adapter_path / "adapter_model.safetensors"))
    return any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())


def test_pipeline_trains_sft_rm_ppo_and_adapters_reload(train_settings, lake, tiny_model_dir, caplog):
    fill_lake(lake, n=8, positive_every=2)
    with caplog.at_level(logging.INFO, logger="retro.train.steps"):
        result = train_all(train_settings, lake)
    assert result["skipped"] == {}, result["skipped"]
    assert result["candidate"] == result["ppo"]
    frame = list_model_versions(lake)
    assert sorted(frame["stage"].to_list()) == ["ppo", "rm", "sft"]
    versions = {row["stage"]: row for row in frame.iter_rows(named=True)}
    assert versions["ppo"]["parent_model_id"] == result["sft"]
    assert versions["sft"]["dataset_version"] == result["datasets"]["sft"]
    again = train_all(train_settings, lake)  # same rows, settings and code: found, not trained again
    assert {k: again[k] for k in ("sft", "rm", "ppo")} == {k: result[k] for k in ("sft", "rm", "ppo")}
    assert list_model_versions(lake).height == 3

    tokenizer = lora.load_tokenizer(tiny_model_dir)
    text = lora.chat_prompt(tokenizer, prompt_for("hotpotqa-0")) + "Search the entity first."
    base = lora.load_causal_lm(tiny_model_dir, tokenizer).eval()

    # SFT: a trained adapter that changes the base model's predictions
    sft_path = lora.adapter_dir(train_settings, result["sft"])
    assert _lora_b_nonzero(sft_path)
    sft_model = lora.load_policy(tiny_model_dir, sft_path, tokenizer).eval()
    assert not torch.allclose(_logits(base, tokenizer, text), _logits(sft_model, tokenizer, text))
    sft_metrics = json.loads(versions["sft"]["metrics"])
    assert sft_metrics["train/steps"] >= 1 and sft_metrics["train/rows"] == 4
    # every stage keeps its per-step history (the report's curves) and logged each step as it went
    assert [h["step"] for h in sft_metrics["history"]] == list(range(1, sft_metrics["train/steps"] + 1))
    assert all("loss" in h for h in sft_metrics["history"])
    steps_logged = [r.getMessage() for r in caplog.records if r.name == "retro.train.steps"]
    assert f"sft step 1/{sft_metrics['train/steps']}: loss " in "\n".join(steps_logged)

    # Reward model: trained LoRA and score head reload exactly (the head is not re-initialised)
    rm_path = lora.adapter_dir(train_settings, result["rm"])
    assert _lora_b_nonzero(rm_path)
    texts = [reward_text(tokenizer, prompt_for("x"), "Search first."), reward_text(tokenizer, prompt_for("y"), "No.")]
    first = score_texts(lora.load_reward_model(tiny_model_dir, rm_path, tokenizer), tokenizer, texts, 256)
    again = score_texts(lora.load_reward_model(tiny_model_dir, rm_path, tokenizer), tokenizer, texts, 256)
    assert first == again
    rm_metrics = json.loads(versions["rm"]["metrics"])
    assert 0.0 <= rm_metrics["eval/accuracy"] <= 1.0 and rm_metrics["eval/rows"] == 2
    assert len(rm_metrics["history"]) == rm_metrics["train/steps"] and all("loss" in h for h in rm_metrics["history"])

    # PPO: one standalone adapter on the base (SFT and PPO concatenated), trl's metric names
    ppo_path = lora.adapter_dir(train_settings, result["ppo"])
    config = json.loads((ppo_path / "adapter_config.json").read_text())
    assert config["r"] == 2 * train_settings.train.lora_r
    ppo_model = lora.load_policy(tiny_model_dir, ppo_path, tokenizer).eval()
    assert not torch.equal(_logits(sft_model, tokenizer, text), _logits(ppo_model, tokenizer, text))
    ppo_metrics = json.loads(versions["ppo"]["metrics"])
    for name in ("objective/kl", "objective/scores", "objective/entropy", "policy/approxkl_avg", "loss/value_avg"):
        assert name in ppo_metrics
    assert ppo_metrics["ppo/updates"] == 2  # 4 episodes / batch 2
    assert [{"objective/kl", "objective/scores"} <= set(h) for h in ppo_metrics["history"]] == [True, True]
    assert sum(line.startswith("ppo step ") for line in steps_logged) == 2
    assert (ppo_path / "retro_config.json").is_file() and (ppo_path / "metrics.json").is_file()


def test_one_class_and_empty_data_skip_every_stage(train_settings, lake, caplog):
    fill_lake(lake, n=5, positive_every=0)  # nothing ever helped
    caplog.set_level("INFO", logger="retro")
    result = train_all(train_settings, lake)
    assert result["sft"] is result["rm"] is result["ppo"] is result["candidate"] is None
    assert result["skipped"]["sft"].startswith("skip sft: 0 positive reflections")
    assert result["skipped"]["rm"] == f"skip reward model: 0 positive of 5 ratings in reward v{result['datasets']['reward']}"
    assert "no reward model" in result["skipped"]["ppo"]
    assert list_model_versions(lake).is_empty()
    assert result["skipped"]["rm"] in caplog.text
    assert not list(train_settings.models_dir.glob("adapters/*"))  # no half model left behind


def test_empty_lake_skips_and_ppo_without_sft_starts_from_base(train_settings, lake):
    assert isinstance(train_sft(train_settings, lake), Skipped)
    assert isinstance(train_reward_model(train_settings, lake), Skipped)
    assert isinstance(train_ppo(train_settings, lake), Skipped)  # no reward model registered
    skipped_sft = Skipped("sft", "skip sft: test")
    fake_rm = ModelVersion(model_id="rm-x", stage="rm", base_model=train_settings.retrospective.model,
                           adapter_path=train_settings.home / "none", dataset="reward", dataset_version="v")
    result = train_ppo(train_settings, lake, sft=skipped_sft, reward_model=fake_rm)
    assert isinstance(result, Skipped) and "0 reflection prompts" in result.reason


def test_stratified_split_is_seeded_and_keeps_both_classes():
    labels = [True] * 3 + [False] * 7
    train, held = stratified_split(labels, 0.2, seed=0)
    assert stratified_split(labels, 0.2, seed=0) == (train, held)
    assert sorted(train + held) == list(range(10)) and len(held) == 2
    assert any(labels[i] for i in train) and not all(labels[i] for i in train)
    assert stratified_split([True, False], 0.5, seed=0) == ([0, 1], [])  # one of a class stays in training


def test_standalone_adapter_equals_sft_merged_plus_ppo(train_settings, tiny_model_dir, tmp_path):
    from peft import get_peft_model

    tokenizer = lora.load_tokenizer(tiny_model_dir)
    torch.manual_seed(1)
    paths = {}
    for name in ("sft", "ppo"):
        model = get_peft_model(lora.load_causal_lm(tiny_model_dir, tokenizer), lora.lora_config(train_settings))
        for key, param in model.named_parameters():
            if "lora_B" in key:
                torch.nn.init.normal_(param, std=0.05)
        model.save_pretrained(tmp_path / name)
        paths[name] = tmp_path / name
    save_standalone_adapter(tiny_model_dir, tokenizer, paths["sft"], paths["ppo"], tmp_path / "both")

    from peft import PeftModel

    stacked = PeftModel.from_pretrained(lora.load_policy(tiny_model_dir, paths["sft"], tokenizer), str(paths["ppo"]))
    alone = lora.load_policy(tiny_model_dir, tmp_path / "both", tokenizer, merge=False)
    text = lora.chat_prompt(tokenizer, "hello") + "world"
    assert torch.allclose(_logits(stacked.eval(), tokenizer, text), _logits(alone.eval(), tokenizer, text), atol=1e-4)


def test_model_ids_address_the_rows_parents_settings_they_were_trained_on(train_settings):
    import polars as pl

    rows = pl.DataFrame({"prompt": ["a", "b"], "reflection": ["x", "y"]})
    first = lora.model_id_for(train_settings, "sft", rows)
    assert first == lora.model_id_for(train_settings, "sft", rows.clone()) and first.startswith("sft-")
    changed = [
        lora.model_id_for(train_settings, "sft", rows.with_columns(pl.lit("z").alias("reflection"))),
        lora.model_id_for(train_settings, "sft", rows.reverse()),
        lora.model_id_for(train_settings, "sft", rows, parents=("sft-x",)),
        lora.model_id_for(train_settings.model_copy(update={"train": train_settings.train.model_copy(
            update={"sft_lr": 1e-3})}), "sft", rows),
        lora.model_id_for(train_settings, "rm", rows),
    ]
    assert first not in changed and len(set(changed)) == len(changed)
