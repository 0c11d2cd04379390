"""Stage 2: the reward model, a one-logit sequence classifier on (reflection prompt + reflection) that
predicts whether the reflection led to a better next trial (label = rating > threshold).

LoRA on the backbone plus the trained `score` head. trl's RewardTrainer needs (chosen, rejected) pairs
for the same prompt, which a rollout rarely produces (one reflection per failed trial), so this is a
plain classification fine-tune with a class-balanced BCE loss on transformers' Trainer. The held-out
accuracy (a seeded, stratified `dataset.eval_fraction` split) is recorded as `eval/accuracy`.
"""

from __future__ import annotations

import logging
import random
import shutil
import time

import torch

from retro.config import Settings
from retro.store.lake import Lake
from retro.train import lora
from retro.train.datasets import DatasetVersion, build_dataset
from retro.train.registry import ModelVersion, register_model_version, trained_before
from retro.train.result import Skipped, skip
from retro.train.sft import loss_metrics

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


# -- the stage ---------------------------------------------------------------------------------------------
def train_reward_model(settings: Settings, lake: Lake,
                       dataset_version: DatasetVersion | None = None) -> ModelVersion | Skipped:
    """Train the reward model on datasets/reward.sql (built now if not given); Skipped on one-class data."""
    from transformers import DataCollatorWithPadding, TrainingArguments

    from datasets import Dataset

    # 1. data: both classes are needed to learn anything
    data = dataset_version or build_dataset(settings, lake, "reward")
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
    lora.seed_everything(settings.train.seed)
    base = lora.base_model_path(settings)
    tokenizer = lora.load_tokenizer(base)
    tokenizer.truncation_side = "left"  # keep the reflection, drop the oldest prompt text
    model = lora.load_classifier(base, tokenizer)
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
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
    )
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start

    # 4. held-out accuracy (and the majority-class baseline to read it against)
    metrics = {
        "train/loss": float(result.training_loss),
        **loss_metrics(trainer.state.log_history),
        "train/rows": len(train_idx),
        "train/positives": int(n_pos),
        "train/steps": int(result.global_step),
        "train/seconds": round(seconds, 3),
        "train/seconds_per_step": round(seconds / max(int(result.global_step), 1), 3),
        "eval/rows": len(eval_idx),
    }
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
    try:
        model.save_pretrained(work / "adapter")
        shutil.rmtree(final, ignore_errors=True)
        (work / "adapter").rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = ModelVersion(
        model_id=model_id, stage="rm", base_model=settings.retrospective.model, adapter_path=final,
        dataset=data.dataset, dataset_version=data.version, parent_model_id=None,
        config=settings.model_dump(mode="json"), metrics=metrics,
    )
    register_model_version(lake, version)
    log.info("reward model %s: %d rows (%d positive) of %s, held-out accuracy %s -> %s", model_id, len(labels),
             positives, data.label, metrics.get("eval/accuracy", "n/a"), final)
    return version
