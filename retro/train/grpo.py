"""Stage 3, group variants: GRPO or RLOO of the retrospective policy (trl's mainline GRPOTrainer /
RLOOTrainer), `train.trainer = grpo | rloo`.

For each reflection prompt of a failed trial the policy samples `train.num_generations` reflections;
each is scored and its advantage is its score against the others of its group (GRPO: the group's mean
and spread; RLOO: the mean of the other samples), so no value model is needed. The score is a reward
function: the trained reward model (`RewardModelScore`, settings train.reward = model), or the environment
itself (train.reward = environment, retro/train/env_reward.py): the return of the actor's next trial
with that reflection, minus the failed trial's; its prompts are then datasets/replay.sql's failed trials.

Like PPO: the policy starts from the SFT adapter merged into the base (the base alone when SFT was
skipped), trains a fresh LoRA adapter, the KL reference is the same model with the adapter off, and
the saved adapter stands alone on the base (SFT and this stage concatenated).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from retro.config import Settings
from retro.llm.base import LLM
from retro.store.lake import Lake
from retro.store.registry import ModelVersion, register_model_version, trained_before
from retro.train import lora
from retro.train.datasets import DatasetVersion, build_dataset
from retro.train.env_reward import EnvironmentReward
from retro.train.ppo import Parent, check_parents, resolve_parent, save_policy
from retro.train.result import Skipped, skip
from retro.train.reward import reward_text, score_texts
from retro.train.steps import step_history, step_logger

log = logging.getLogger(__name__)

RewardFn = Callable[..., list[float]]  # trl's reward-function signature: (prompts, completions, **columns)


class RewardModelScore:
    """trl reward function: the trained reward model's score of (prompt, reflection), read exactly as the
    reward model was trained to read it (reward.reward_text)."""

    __name__ = "reward_model"  # trl logs rewards under the function's name

    def __init__(self, model, tokenizer, max_length: int):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def __call__(self, prompts: list, completions: list, **_: Any) -> list[float]:
        texts = [reward_text(self.tokenizer, p[-1]["content"], c[-1]["content"])
                 for p, c in zip(prompts, completions, strict=True)]
        return score_texts(self.model, self.tokenizer, texts, self.max_length)


def group_metrics(log_history: list[dict], seconds: float) -> dict[str, Any]:
    """trl's logged values of the last step (reward, reward_std, kl, ...), the first step's reward for the
    trend, and the time per update."""
    steps = [entry for entry in log_history if "reward" in entry]
    if not steps:
        return {}
    metrics = {k if "/" in k else f"objective/{k}": float(v) for k, v in steps[-1].items()
               if isinstance(v, int | float)}
    metrics["objective/reward_first"] = float(steps[0]["reward"])
    metrics["group/updates"] = len(steps)
    metrics["group/seconds"] = round(seconds, 3)
    metrics["group/seconds_per_update"] = round(seconds / len(steps), 3)
    metrics["history"] = step_history(steps)  # per update: the report's curves
    return metrics


def train_group(settings: Settings, lake: Lake, dataset_version: DatasetVersion | None = None,
                sft: Parent = None, reward_model: Parent = None, actor: LLM | None = None,
                algorithm: str | None = None) -> ModelVersion | Skipped:
    """GRPO or RLOO (settings train.trainer, or `algorithm`) on the prompts of failed trials: datasets/ppo.sql
    with the reward model, datasets/replay.sql with the environment's reward (built now if not given).

    `reward_model`: a ModelVersion, an id, a Skipped, or None for the newest registered one (reward = model).
    `actor`: the actor that plays the environment's reward (reward = environment; default: settings.actor).
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    algorithm = algorithm or settings.train.trainer
    by_environment = settings.train.reward == "environment"

    # 1. parents: a reward model unless the environment rewards; the SFT policy is optional
    base_name = settings.retrospective.model
    rm = None
    if not by_environment:
        rm = resolve_parent(lake, reward_model, "rm", base_name)
        if rm is None:
            why = reward_model.reason if isinstance(reward_model, Skipped) else "none is registered"
            return skip(algorithm, f"skip {algorithm}: no reward model to score reflections ({why})")
    policy_parent = resolve_parent(lake, sft, "sft", base_name)

    # 2. data: the prompts of failed trials, as one-turn chats
    data = dataset_version or build_dataset(settings, lake, "replay" if by_environment else "ppo")
    frame = data.frame()
    if frame.height == 0:
        return skip(algorithm, f"skip {algorithm}: 0 reflection prompts of failed trials in {data.label}")
    reward_name = f"environment:{actor.name if actor else settings.actor.model}" if by_environment else rm.model_id
    model_id = lora.model_id_for(settings, algorithm, frame, (policy_parent.model_id if policy_parent else None,
                                                              reward_name))
    if (done := trained_before(lake, model_id)) is not None:
        return done

    # an update samples `batch_size` reflections, as PPO's does: batch_size / num_generations prompts (at least
    # one) x num_generations samples each; with the environment's reward each is played as one episode
    t = settings.train
    group = t.num_generations
    completions = max(t.batch_size // group, 1) * group

    # 3. models, seeded from config
    check_parents(policy_parent, rm)
    base, tokenizer = lora.seeded_base(settings)
    policy = lora.load_policy(base, policy_parent.adapter_path if policy_parent else None, tokenizer, merge=True)
    if by_environment:
        from retro.llm import make_llm

        actor = actor or make_llm(settings.actor, settings, batch=completions)
        reward_fn: RewardFn = EnvironmentReward(settings, lake, actor, frame, model_id)
    else:
        scorer = lora.load_reward_model(base, rm.adapter_path, tokenizer).eval().requires_grad_(False)
        reward_fn = RewardModelScore(scorer, tokenizer, settings.train.max_length)
    rows = [{**row, "prompt": [{"role": "user", "content": row["prompt"]}]} for row in frame.iter_rows(named=True)]

    # 4. trl's Config + Trainer
    micro = lora.micro_batch(completions)
    final, work = lora.new_adapter(settings, model_id)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**lora.training_args(
        settings, work / "trainer",
        learning_rate=t.ppo_lr,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=completions // micro,
        num_generations=group,
        max_completion_length=lora.reflection_budget(settings, frame),
        # as PPO: ppo_total_episodes sampled reflections, each batch of them optimised ppo_epochs times
        max_steps=max(t.ppo_total_episodes // completions, 1) * t.ppo_epochs,
        num_iterations=t.ppo_epochs,
        beta=t.ppo_kl_coef,
        temperature=settings.rollout.branch_temperature,
        top_p=settings.retrospective.top_p,
    ))
    trainer = trainer_cls(model=policy, reward_funcs=reward_fn, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora.lora_config(settings, "causal"),
                          callbacks=[step_logger(algorithm)])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    played = reward_fn.run_ids if isinstance(reward_fn, EnvironmentReward) else []
    if isinstance(reward_fn, EnvironmentReward):
        reward_fn.finish()

    # 5. save one standalone adapter atomically, then register it
    save_policy(trainer.model, base, tokenizer, policy_parent.adapter_path if policy_parent else None, final, work)
    metrics = {**group_metrics(trainer.state.log_history, seconds), "train/rows": frame.height,
               "group/num_generations": group}
    version = ModelVersion(
        model_id=model_id, stage=algorithm, base_model=base_name, adapter_path=final,
        dataset=data.dataset, dataset_version=data.version,
        parent_model_id=policy_parent.model_id if policy_parent else None,
        config={**settings.model_dump(mode="json"), "reward_model_id": rm.model_id if rm else None,
                "reward": reward_name, "reward_run_ids": played},
        metrics=metrics,
    )
    register_model_version(lake, version)
    log.info("%s %s: %d updates on %d prompts of %s, reward %.3f -> %.3f -> %s", algorithm, model_id,
             metrics.get("group/updates", 0), frame.height, data.label, metrics.get("objective/reward_first", float("nan")),
             metrics.get("objective/reward", float("nan")), final)
    return version
