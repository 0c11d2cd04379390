"""Stage 3: PPO of the retrospective policy against the trained reward model (trl.experimental.ppo).

The policy is the base model with the SFT adapter merged in (the base alone when SFT was skipped);
PPO trains a fresh LoRA adapter on it, so the reference policy is that same model with the adapter
switched off (ref_model=None). The reward model is the trained classifier merged into one model; the
value model starts as a copy of it and trains LoRA on its backbone plus its score head. Queries are
the reflection prompts of failed trials (datasets/ppo.sql) under the retrospective chat template;
a rollout stops at the end-of-turn token and is penalised when it never gets there.

The saved adapter stands alone on the base model: the SFT and PPO adapters are concatenated into
one LoRA of rank 2r (exact: the two low-rank updates simply add), so serving needs only base + adapter.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from retro.config import Settings
from retro.errors import ConfigError
from retro.llm.base import read_adapter_config
from retro.store.lake import Lake
from retro.store.registry import (
    ModelVersion,
    get_model_version,
    latest_model_version,
    register_model_version,
    trained_before,
)
from retro.train import lora
from retro.train.datasets import DatasetVersion, build_dataset
from retro.train.result import Skipped, skip
from retro.train.steps import step_history, step_logger

log = logging.getLogger(__name__)

MISSING_EOS_PENALTY = 1.0  # score taken off a rollout that runs to max_new_tokens without ending its turn
Parent = ModelVersion | Skipped | str | None


# -- helpers -------------------------------------------------------------------------------------------------
def resolve_parent(lake: Lake, given: Parent, stage: str, base_model: str) -> ModelVersion | None:
    """A parent stage's model: as given, by id, None when it was skipped, or (None) the newest registered."""
    if isinstance(given, Skipped):
        return None
    version = given if isinstance(given, ModelVersion) else (
        get_model_version(lake, given) if isinstance(given, str) else latest_model_version(lake, stage, base_model))
    if version is not None and version.stage != stage:
        raise ConfigError(f"model {version.model_id} is a {version.stage} model, not {stage}: pass a {stage} model id")
    if version is not None and version.base_model != base_model:
        raise ConfigError(f"{stage} model {version.model_id} was trained on {version.base_model}, not on "
                          f"{base_model}: retrain it or set RETRO_RETROSPECTIVE__MODEL to its base")
    return version


def check_parents(*parents: ModelVersion | None) -> None:
    """Each parent's adapter folder is there, or one line names the missing one, before any model loads."""
    for parent in parents:
        if parent is not None:
            read_adapter_config(Path(parent.adapter_path), f"{parent.stage} model {parent.model_id}")


def value_model_from(reward_model, settings: Settings):
    """The critic: a copy of the reward model with LoRA on its backbone and a trainable score head."""
    from peft import inject_adapter_in_model

    value = inject_adapter_in_model(lora.lora_config(settings, "seq-cls"), copy.deepcopy(reward_model))
    for name, param in value.named_parameters():
        param.requires_grad = "lora_" in name or name.startswith("score.")
    return value


def tokenize_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> list[list[int]]:
    """Chat-templated queries, cut from the left to fit (the task line sits near the end)."""
    tokenizer.truncation_side = "left"
    texts = [lora.chat_prompt(tokenizer, p) for p in prompts]
    return tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_prompt_tokens)["input_ids"]


@contextlib.contextmanager
def exact_accumulation(trainer):
    """Accumulate over exactly `gradient_accumulation_steps` micro-batches. trl's PPO loop steps the
    optimizer inside accelerate's accumulate(), which by default also syncs on every micro-batch of an
    update that fetched the prompt dataloader's last batch (one optimizer step per sequence there)."""
    state = trainer.accelerator.gradient_state
    before = state.plugin_kwargs.get("sync_with_dataloader", True)
    state.plugin_kwargs["sync_with_dataloader"] = False
    try:
        yield
    finally:
        state.plugin_kwargs["sync_with_dataloader"] = before


def ppo_metrics(log_history: list[dict], seconds: float) -> dict[str, Any]:
    """trl's metrics of the last update (objective/kl, objective/scores, ...), the first update's
    scores for the trend, and the time per update."""
    updates = [entry for entry in log_history if "objective/scores" in entry]
    if not updates:
        return {}
    metrics = {k: float(v) for k, v in updates[-1].items() if "/" in k}
    metrics["objective/scores_first"] = float(updates[0]["objective/scores"])
    metrics["ppo/updates"] = len(updates)
    metrics["ppo/seconds"] = round(seconds, 3)
    metrics["ppo/seconds_per_update"] = round(seconds / len(updates), 3)
    metrics["history"] = step_history(updates)  # per update: the report's curves
    return metrics


def save_standalone_adapter(base_path: Path, tokenizer, sft_adapter: Path | None, ppo_adapter: Path,
                            out: Path) -> None:
    """Write one adapter that loads on the base model alone: PPO's, or SFT's and PPO's concatenated."""
    if sft_adapter is None:
        shutil.copytree(ppo_adapter, out)
        return
    from peft import PeftModel

    model = PeftModel.from_pretrained(lora.load_causal_lm(base_path, tokenizer), str(sft_adapter), adapter_name="sft")
    model.load_adapter(str(ppo_adapter), adapter_name="ppo")
    model.add_weighted_adapter(["sft", "ppo"], [1.0, 1.0], "retro", combination_type="cat")
    model.save_pretrained(out.with_name(out.name + ".cat"), selected_adapters=["retro"])
    (out.with_name(out.name + ".cat") / "retro").rename(out)
    shutil.rmtree(out.with_name(out.name + ".cat"))


def save_policy(model, base_path: Path, tokenizer, sft_adapter: Path | None, final: Path, work: Path) -> None:
    """Save a trained policy's adapter as one standalone adapter at `final`: written in `work`, then renamed."""
    try:
        model.save_pretrained(work / "policy")
        save_standalone_adapter(base_path, tokenizer, sft_adapter, work / "policy", work / "adapter")
        shutil.rmtree(final, ignore_errors=True)
        (work / "adapter").rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the stage ---------------------------------------------------------------------------------------------
def train_ppo(settings: Settings, lake: Lake, dataset_version: DatasetVersion | None = None,
              sft: Parent = None, reward_model: Parent = None) -> ModelVersion | Skipped:
    """PPO on datasets/ppo.sql (built now if not given) from the SFT policy against the reward model.

    `sft` / `reward_model`: a ModelVersion, a model id, a Skipped (that stage did not train), or None
    for the newest registered one. No reward model skips PPO; no SFT model starts from the base.
    """
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    # 1. parents: a reward model is required, the SFT policy is optional
    base_name = settings.retrospective.model
    rm = resolve_parent(lake, reward_model, "rm", base_name)
    if rm is None:
        why = reward_model.reason if isinstance(reward_model, Skipped) else "none is registered"
        return skip("ppo", f"skip ppo: no reward model to score rollouts ({why})")
    policy_parent = resolve_parent(lake, sft, "sft", base_name)
    if policy_parent is None:
        log.info("ppo: no sft model, starting from the base model %s", base_name)

    # 2. data: the prompts of failed trials
    data = dataset_version or build_dataset(settings, lake, "ppo")
    frame = data.frame()
    if frame.height == 0:
        return skip("ppo", f"skip ppo: 0 reflection prompts of failed trials in {data.label}")
    batch = min(settings.train.batch_size, frame.height)  # trl drops ragged batches: never more than the rows
    model_id = lora.model_id_for(settings, "ppo", frame, (policy_parent.model_id if policy_parent else None,
                                                          rm.model_id))
    if (done := trained_before(lake, model_id)) is not None:
        return done

    # 3. models, seeded from config
    check_parents(policy_parent, rm)
    base, tokenizer = lora.seeded_base(settings)
    policy = lora.load_policy(base, policy_parent.adapter_path if policy_parent else None, tokenizer, merge=True)
    reward = lora.load_reward_model(base, rm.adapter_path, tokenizer).eval().requires_grad_(False)
    value = value_model_from(reward, settings)
    response_length = lora.reflection_budget(settings, frame)
    queries = tokenize_prompts(tokenizer, frame["prompt"].to_list(), settings.train.max_length - response_length)

    # 4. trl's Config + Trainer
    final, work = lora.new_adapter(settings, model_id)
    args = PPOConfig(**lora.training_args(
        settings, work / "trainer",
        learning_rate=settings.train.ppo_lr,
        # Rollouts take `batch` prompts at once; the optimisation goes micro-batch by micro-batch (one
        # sequence on CPU, where the activations of policy and critic cost ~2.5 GB per 450-token sequence
        # of SmolLM2-135M) and accumulates gradients to one optimizer step per update.
        per_device_train_batch_size=lora.micro_batch(batch),
        gradient_accumulation_steps=batch // lora.micro_batch(batch),
        num_mini_batches=1,
        local_rollout_forward_batch_size=batch,
        total_episodes=settings.train.ppo_total_episodes,
        num_ppo_epochs=settings.train.ppo_epochs,
        kl_coef=settings.train.ppo_kl_coef,
        response_length=response_length,
        temperature=settings.rollout.branch_temperature,  # reflections sampled as the branches sample them
        # (trl's PPO samples with temperature only: no nucleus option in PPOConfig)
        stop_token="eos",  # the tokenizer's eos is the chat end-of-turn token
        missing_eos_penalty=MISSING_EOS_PENALTY,
        num_sample_generations=0,  # no eval sampling (it needs an eval set and costs generations)
        sft_model_path=str(policy_parent.adapter_path if policy_parent else base),
        reward_model_path=str(rm.adapter_path),
    ))
    trainer = PPOTrainer(
        args=args, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward,
        train_dataset=Dataset.from_dict({"input_ids": queries}), value_model=value,
        peft_config=lora.lora_config(settings, "causal"), callbacks=[step_logger("ppo")],
    )
    start = time.perf_counter()
    with exact_accumulation(trainer):
        trainer.train()
    seconds = time.perf_counter() - start

    # 5. save one standalone adapter atomically, then register it
    save_policy(trainer.policy_model, base, tokenizer, policy_parent.adapter_path if policy_parent else None,
                final, work)
    metrics = {**ppo_metrics(trainer.state.log_history, seconds), "train/rows": frame.height,
               "ppo/batch_size": batch}
    version = ModelVersion(
        model_id=model_id, stage="ppo", base_model=base_name, adapter_path=final,
        dataset=data.dataset, dataset_version=data.version,
        parent_model_id=policy_parent.model_id if policy_parent else None,
        config={**settings.model_dump(mode="json"), "reward_model_id": rm.model_id}, metrics=metrics,
    )
    register_model_version(lake, version)
    log.info("ppo %s: %d updates on %d prompts of %s (reward model %s), scores %.3f -> %.3f, kl %.4f -> %s",
             model_id, metrics.get("ppo/updates", 0), frame.height, data.label, rm.model_id,
             metrics.get("objective/scores_first", float("nan")), metrics.get("objective/scores", float("nan")),
             metrics.get("objective/kl", float("nan")), final)
    return version
