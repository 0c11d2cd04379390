"""Stage 2: the reward model, a one-logit sequence classifier on (reflection prompt + reflection) that
scores how much a reflection helps the next trial. LoRA on the backbone plus the trained `score` head.

Two routes, chosen by the data:
- pairwise (datasets/reward_pairs.sql has rows): trl's RewardTrainer on (chosen, rejected) reflections of
  one prompt, a Bradley-Terry loss. Pairs come from several reflections per failure
  (rollout.reflections_per_failure), each tried by its own branch. Held-out pairwise accuracy (pairs of a
  seeded `dataset.eval_fraction` of the prompts, never seen in training) is `eval/pairwise_accuracy`.
- pointwise (no pairs, e.g. one reflection per failure): a classifier of rating > threshold with a
  class-balanced BCE loss on transformers' Trainer; held-out accuracy (a seeded, stratified split) is
  `eval/accuracy`.
"""

from __future__ import annotations

import logging
import random
import shutil
import time

import torch

from retro.config import Settings
from retro.store.lake import Lake
from retro.store.registry import ModelVersion, register_model_version, trained_before
from retro.train import lora
from retro.train.datasets import DatasetVersion, build_dataset
from retro.train.result import Skipped, skip
from retro.train.sft import loss_metrics
from retro.train.steps import step_history, step_logger

log = logging.getLogger(__name__)


# -- helpers -------------------------------------------------------------------------------------------------
def stratified_split(labels: list[bool], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) row indices; each class keeps at least one training row."""
    rng = random.Random(seed)
    train, held = [], []
    for cls in (True, False):
        rows = [i for i, y in enumerate(labels) if y is cls]
        rng.shuffle(rows)
        n_eval = min(int(len(rows) * eval_fraction + 0.5), max(len(rows) - 1, 0))
        held += rows[:n_eval]
        train += rows[n_eval:]
    return sorted(train), sorted(held)


def reward_text(tokenizer, prompt: str, reflection: str) -> str:
    """What the reward model reads: the chat prompt and the reflection ending in the end-of-turn token,
    as PPO's rollouts end (the score is read at that last token)."""
    return lora.chat_prompt(tokenizer, prompt) + reflection.strip() + tokenizer.eos_token


class BalancedBCETrainer:
    """Factory for a transformers Trainer whose loss is BCE on the single logit, positives weighted
    by (negatives / positives) so a rare success still moves the score."""

    @staticmethod
    def build(pos_weight: float, **kwargs):
        from transformers import Trainer

        class _Trainer(Trainer):
            def __init__(self, **kw):
                super().__init__(**kw)
                # The loss below is a mean over the micro-batch: let the Trainer average it over gradient
                # accumulation (it would otherwise pass a token count meant for causal-LM labels).
                self.model_accepts_loss_kwargs = False

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                labels = inputs.pop("labels").float()
                outputs = model(**inputs)
                logits = outputs.logits.squeeze(-1).float()
                weight = torch.tensor(pos_weight, device=logits.device)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)
                return (loss, outputs) if return_outputs else loss

        return _Trainer(**kwargs)


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 8) -> list[float]:
    """The reward model's logit for each text."""
    model.eval()
    scores: list[float] = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length, add_special_tokens=False).to(model.device)
        scores += model(**batch).logits.squeeze(-1).float().tolist()
    return scores


def accuracy(scores: list[float], labels: list[bool]) -> float:
    return sum((s > 0) == y for s, y in zip(scores, labels, strict=True)) / len(labels)


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> float:
    """How often the better reflection of a pair scores higher."""
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


def split_prompts(prompts: list[str], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) row indices with whole prompts on one side, so held-out pairs are of prompts
    the model never saw; at least one prompt stays in training."""
    distinct = sorted(set(prompts))
    random.Random(seed).shuffle(distinct)
    n_eval = min(int(len(distinct) * eval_fraction + 0.5), len(distinct) - 1)
    held = set(distinct[:n_eval])
    return [i for i, p in enumerate(prompts) if p not in held], [i for i, p in enumerate(prompts) if p in held]


def _classifier(settings: Settings):
    """(tokenizer, the base model as a one-logit classifier), seeded; prompts are cut from the left, so the
    reflection at the end always stays."""
    base, tokenizer = lora.seeded_base(settings)
    tokenizer.truncation_side = "left"
    return tokenizer, lora.load_classifier(base, tokenizer)


def _save(model, final, work) -> None:
    """Save the adapter (with its score head) into `work`, then move it to `final` in one rename."""
    try:
        model.save_pretrained(work / "adapter")
        shutil.rmtree(final, ignore_errors=True)
        (work / "adapter").rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _register(settings: Settings, lake: Lake, model_id: str, final, data: DatasetVersion,
              metrics: dict) -> ModelVersion:
    version = ModelVersion(
        model_id=model_id, stage="rm", base_model=settings.retrospective.model, adapter_path=final,
        dataset=data.dataset, dataset_version=data.version, parent_model_id=None,
        config=settings.model_dump(mode="json"), metrics=metrics,
    )
    register_model_version(lake, version)
    return version


def _fit_metrics(result, log_history: list[dict], seconds: float, rows: int) -> dict:
    steps = int(result.global_step)
    return {"train/loss": float(result.training_loss), **loss_metrics(log_history), "train/rows": rows,
            "train/steps": steps, "train/seconds": round(seconds, 3),
            "train/seconds_per_step": round(seconds / max(steps, 1), 3),
            "history": step_history(log_history)}  # per step: the report's curves


# -- the stage ---------------------------------------------------------------------------------------------
def train_reward_model(settings: Settings, lake: Lake, dataset_version: DatasetVersion | None = None,
                       pairs_version: DatasetVersion | None = None) -> ModelVersion | Skipped:
    """Train the reward model on datasets/reward_pairs.sql when it has pairs, else pointwise on
    datasets/reward.sql (each built now if not given); Skipped when neither has anything to learn."""
    pairs = pairs_version or build_dataset(settings, lake, "reward_pairs")
    if pairs.row_count:
        return train_pairwise(settings, lake, pairs)
    return train_pointwise(settings, lake, dataset_version or build_dataset(settings, lake, "reward"))


def train_pairwise(settings: Settings, lake: Lake, data: DatasetVersion) -> ModelVersion:
    """Bradley-Terry on (chosen, rejected) pairs with trl's RewardTrainer, LoRA + score head."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    # 1. data: pairs, split by prompt
    frame = data.frame()
    prompts = frame["prompt"].to_list()
    train_idx, eval_idx = split_prompts(prompts, settings.dataset.eval_fraction, settings.train.seed)
    model_id = lora.model_id_for(settings, "rm", frame)
    if (done := trained_before(lake, model_id)) is not None:
        return done

    # 2. model and tokenizer, seeded from config
    tokenizer, model = _classifier(settings)
    chosen = [reward_text(tokenizer, p, c) for p, c in zip(prompts, frame["chosen"].to_list(), strict=True)]
    rejected = [reward_text(tokenizer, p, r) for p, r in zip(prompts, frame["rejected"].to_list(), strict=True)]

    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer([texts[i] for i in train_idx], truncation=True, max_length=settings.train.max_length,
                         add_special_tokens=False)["input_ids"]

    # 3. trl's Config + Trainer (pre-tokenized, so its own tokenization and length filter leave the rows be)
    final, work = lora.new_adapter(settings, model_id)
    args = RewardConfig(**lora.training_args(
        settings, work / "trainer", learning_rate=settings.train.rm_lr, num_train_epochs=settings.train.rm_epochs,
        max_length=settings.train.max_length,
    ))
    train_set = Dataset.from_dict({"chosen_ids": ids(chosen), "rejected_ids": ids(rejected)})
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=train_set,
                            peft_config=lora.lora_config(settings, "seq-cls"), callbacks=[step_logger("rm")])
    start = time.perf_counter()
    result = trainer.train()
    metrics = {**_fit_metrics(result, trainer.state.log_history, time.perf_counter() - start, len(train_idx)),
               "rm/kind": "pairwise", "train/prompts": len({prompts[i] for i in train_idx}),
               "eval/rows": len(eval_idx), "eval/prompts": len({prompts[i] for i in eval_idx})}

    # 4. pairwise accuracy, in training and on the held-out prompts
    model = trainer.model
    for split, rows in (("train", train_idx), ("eval", eval_idx)):
        if rows:
            scores_c = score_texts(model, tokenizer, [chosen[i] for i in rows], settings.train.max_length)
            scores_r = score_texts(model, tokenizer, [rejected[i] for i in rows], settings.train.max_length)
            metrics[f"{split}/pairwise_accuracy"] = pairwise_accuracy(scores_c, scores_r)
    if not eval_idx:
        log.info("reward model: no held-out prompts (eval_fraction %.2f of %d prompts), eval/pairwise_accuracy "
                 "not measured", settings.dataset.eval_fraction, len(set(prompts)))

    # 5. save the adapter (with its score head) atomically, then register it
    _save(model, final, work)
    version = _register(settings, lake, model_id, final, data, metrics)
    log.info("reward model %s (pairwise): %d pairs of %d prompts in %s, held-out pairwise accuracy %s -> %s",
             model_id, frame.height, len(set(prompts)), data.label, metrics.get("eval/pairwise_accuracy", "n/a"),
             final)
    return version


def train_pointwise(settings: Settings, lake: Lake, data: DatasetVersion) -> ModelVersion | Skipped:
    """A classifier of rating > threshold on datasets/reward.sql; Skipped on one-class data."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, TrainingArguments

    # 1. data: both classes are needed to learn anything
    frame = data.frame()
    labels = [bool(y) for y in frame["label"].to_list()] if frame.height else []
    positives = sum(labels)
    if positives == 0 or positives == len(labels):
        return skip("rm", f"skip reward model: {positives} positive of {len(labels)} ratings in {data.label}")
    train_idx, eval_idx = stratified_split(labels, settings.dataset.eval_fraction, settings.train.seed)
    model_id = lora.model_id_for(settings, "rm", frame)
    if (done := trained_before(lake, model_id)) is not None:
        return done

    # 2. model and tokenizer, seeded from config
    tokenizer, model = _classifier(settings)
    from peft import get_peft_model

    model = get_peft_model(model, lora.lora_config(settings, "seq-cls"))

    texts = [reward_text(tokenizer, p, r) for p, r in zip(frame["prompt"].to_list(), frame["reflection"].to_list(),
                                                          strict=True)]
    encoded = tokenizer([texts[i] for i in train_idx], truncation=True, max_length=settings.train.max_length,
                        add_special_tokens=False)
    train_set = Dataset.from_dict({**encoded, "labels": [float(labels[i]) for i in train_idx]})
    n_pos = sum(labels[i] for i in train_idx)
    pos_weight = (len(train_idx) - n_pos) / n_pos

    # 3. train
    final, work = lora.new_adapter(settings, model_id)
    args = TrainingArguments(**lora.training_args(
        settings, work / "trainer", learning_rate=settings.train.rm_lr, num_train_epochs=settings.train.rm_epochs,
        remove_unused_columns=False,
    ))
    trainer = BalancedBCETrainer.build(
        pos_weight, model=model, args=args, train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer, callbacks=[step_logger("rm")],
    )
    start = time.perf_counter()
    result = trainer.train()

    # 4. held-out accuracy (and the majority-class baseline to read it against)
    metrics = {**_fit_metrics(result, trainer.state.log_history, time.perf_counter() - start, len(train_idx)),
               "rm/kind": "pointwise", "train/positives": int(n_pos), "eval/rows": len(eval_idx)}
    train_scores = score_texts(model, tokenizer, [texts[i] for i in train_idx], settings.train.max_length)
    metrics["train/accuracy"] = accuracy(train_scores, [labels[i] for i in train_idx])
    if eval_idx:
        held_labels = [labels[i] for i in eval_idx]
        scores = score_texts(model, tokenizer, [texts[i] for i in eval_idx], settings.train.max_length)
        metrics["eval/accuracy"] = accuracy(scores, held_labels)
        metrics["eval/majority_accuracy"] = max(sum(held_labels), len(held_labels) - sum(held_labels)) / len(held_labels)
    else:
        log.info("reward model: no held-out rows (eval_fraction %.2f of %d), eval/accuracy not measured",
                 settings.dataset.eval_fraction, len(labels))

    # 5. save the adapter (with its score head) atomically, then register it
    _save(model, final, work)
    version = _register(settings, lake, model_id, final, data, metrics)
    log.info("reward model %s: %d rows (%d positive) of %s, held-out accuracy %s -> %s", model_id, len(labels),
             positives, data.label, metrics.get("eval/accuracy", "n/a"), final)
    return version
