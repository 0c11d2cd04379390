# ruff: noqa: F811 (fixtures imported from trainkit come back as test arguments)
"""Branch data through the trainers: the pairwise reward model (trl RewardTrainer on chosen/rejected
pairs) and the group policy-gradient trainers (trl GRPOTrainer / RLOOTrainer), each a few steps of a tiny
random Llama on CPU, registered like PPO with a standalone adapter."""

from __future__ import annotations

import json

import pytest
import torch
from trainkit import fill_branches, one_thread, prompt_for, tiny_model_dir, train_settings  # noqa: F401

from retro.store.registry import get_model_version, list_model_versions
from retro.train import lora
from retro.train.grpo import RewardModelScore, train_group
from retro.train.pipeline import train_all
from retro.train.result import Skipped
from retro.train.reward import reward_text, score_texts, split_prompts, train_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairs_train_a_pairwise_reward_model_with_held_out_pairwise_accuracy(train_settings, lake, tiny_model_dir):
    fill_branches(lake, n=5, ratings=(0.0, 1.0, 0.0))
    rm = train_reward_model(train_settings, lake)
    assert not isinstance(rm, Skipped)
    assert rm.dataset == "reward_pairs" and rm.metrics["rm/kind"] == "pairwise"
    assert rm.metrics["train/rows"] + rm.metrics["eval/rows"] == 5 * 2  # (1 > 0) twice per prompt
    assert rm.metrics["eval/prompts"] == 1 and 0.0 <= rm.metrics["eval/pairwise_accuracy"] <= 1.0
    tokenizer = lora.load_tokenizer(tiny_model_dir)
    model = lora.load_reward_model(tiny_model_dir, rm.adapter_path, tokenizer)
    texts = [reward_text(tokenizer, prompt_for("x"), "plan"), reward_text(tokenizer, prompt_for("x"), "other")]
    assert score_texts(model, tokenizer, texts, 256) == score_texts(model, tokenizer, texts, 256)
    assert train_reward_model(train_settings, lake).model_id == rm.model_id  # found, not trained again


def test_without_pairs_the_reward_model_is_pointwise(train_settings, lake):
    fill_branches(lake, n=6, ratings=(1.0,))  # one reflection per prompt, all positive: one class, no pairs
    skipped = train_reward_model(train_settings, lake)
    assert isinstance(skipped, Skipped) and "0 positive" not in skipped.reason and "6 positive of 6" in skipped.reason


def test_prompt_split_keeps_whole_prompts_on_one_side():
    prompts = ["a", "a", "b", "b", "c", "c", "d", "e"]
    train, held = split_prompts(prompts, 0.4, seed=0)
    assert sorted(train + held) == list(range(8)) and held
    assert not {prompts[i] for i in train} & {prompts[i] for i in held}
    assert split_prompts(["a", "a"], 0.9, seed=0) == ([0, 1], [])  # the only prompt stays in training


@pytest.mark.parametrize("trainer", ["grpo", "rloo"])
def test_group_trainers_train_on_the_reward_model_and_register_a_standalone_adapter(train_settings, lake,
                                                                                    tiny_model_dir, trainer):
    fill_branches(lake, n=4, ratings=(0.0, 1.0))
    train_settings.train.trainer = trainer
    train_settings.train.num_generations = 2
    result = train_all(train_settings, lake)
    assert result["skipped"] == {}, result["skipped"]
    assert result["trainer"] == trainer and result["candidate"] == result[trainer]
    versions = {row["stage"]: row for row in list_model_versions(lake).iter_rows(named=True)}
    assert sorted(versions) == sorted(["sft", "rm", trainer])
    policy = versions[trainer]
    assert policy["parent_model_id"] == result["sft"]
    assert get_model_version(lake, result[trainer]).config["reward_model_id"] == result["rm"]
    metrics = json.loads(policy["metrics"])
    assert metrics["group/updates"] == 2 and "objective/reward" in metrics  # 4 episodes / (1 prompt x 2)
    tokenizer = lora.load_tokenizer(tiny_model_dir)
    path = lora.adapter_dir(train_settings, result[trainer])
    assert json.loads((path / "adapter_config.json").read_text())["r"] == 2 * train_settings.train.lora_r
    sft = lora.load_policy(tiny_model_dir, lora.adapter_dir(train_settings, result["sft"]), tokenizer).eval()
    tuned = lora.load_policy(tiny_model_dir, path, tokenizer).eval()
    enc = tokenizer(lora.chat_prompt(tokenizer, prompt_for("hotpotqa-0")) + "Search", return_tensors="pt",
                    add_special_tokens=False)
    with torch.no_grad():
        assert not torch.equal(sft(**enc).logits, tuned(**enc).logits)
    assert train_all(train_settings, lake)[trainer] == result[trainer]  # idempotent


def test_group_trainer_without_a_reward_model_skips(train_settings, lake):
    train_settings.train.trainer = "grpo"
    result = train_group(train_settings, lake, reward_model=Skipped("rm", "skip reward model: test"))
    assert isinstance(result, Skipped) and "no reward model" in result.reason


def test_reward_model_score_reads_prompts_as_the_reward_model_was_trained(tiny_model_dir):
    tokenizer = lora.load_tokenizer(tiny_model_dir)
    model = lora.load_classifier(tiny_model_dir, tokenizer).eval()
    score = RewardModelScore(model, tokenizer, 256)
    prompts = [[{"role": "user", "content": prompt_for("x")}]]
    completions = [[{"role": "assistant", "content": "Search first."}]]
    direct = score_texts(model, tokenizer, [reward_text(tokenizer, prompt_for("x"), "Search first.")], 256)
    assert score(prompts=prompts, completions=completions) == direct
