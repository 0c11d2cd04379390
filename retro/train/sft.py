"""Stage 1: supervised fine-tuning of the retrospective model on its positively rated reflections.

trl's SFTTrainer on conversational prompt/completion pairs (the reflection input as the user turn,
the reflection as the assistant turn), loss on the completion only, LoRA only.
"""

from __future__ import annotations

import logging
import shutil
import time

from retro.config import Settings
from retro.store.lake import Lake
from retro.store.registry import ModelVersion, register_model_version, trained_before
from retro.train import lora
from retro.train.datasets import DatasetVersion, build_dataset
from retro.train.result import Skipped, skip
from retro.train.steps import step_history, step_logger

log = logging.getLogger(__name__)


def sft_rows(frame) -> list[dict]:
    """Dataset rows in trl's conversational prompt/completion format."""
    return [
        {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
        for p, c in zip(frame["prompt"].to_list(), frame["completion"].to_list(), strict=True)
    ]


def loss_metrics(log_history: list[dict], prefix: str = "train") -> dict[str, float]:
    """First and last logged training loss (the curve itself stays in the trainer's log)."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    if not losses:
        return {}
    return {f"{prefix}/loss_first": float(losses[0]), f"{prefix}/loss_last": float(losses[-1])}


def train_sft(settings: Settings, lake: Lake, dataset_version: DatasetVersion | None = None) -> ModelVersion | Skipped:
    """Fine-tune a LoRA adapter on datasets/sft.sql (built now if not given); Skipped when it is empty."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # 1. data: the positive reflections, or nothing to learn from
    data = dataset_version or build_dataset(settings, lake, "sft")
    frame = data.frame()
    if frame.height == 0:
        return skip("sft", f"skip sft: 0 positive reflections (rating > {settings.dataset.positive_threshold}) "
                           f"in {data.label}")

    model_id = lora.model_id_for(settings, "sft", frame)
    if (done := trained_before(lake, model_id)) is not None:
        return done

    # 2. model and tokenizer, seeded from config
    base, tokenizer = lora.seeded_base(settings)
    tokenizer.padding_side = "right"  # training batches; generation pads left
    model = lora.load_causal_lm(base, tokenizer)

    # 3. trl's Config + Trainer
    final, work = lora.new_adapter(settings, model_id)
    args = SFTConfig(**lora.training_args(
        settings, work / "trainer",
        learning_rate=settings.train.sft_lr,
        num_train_epochs=settings.train.sft_epochs,
        max_length=settings.train.max_length,
        completion_only_loss=True,
        packing=False,
    ))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows(frame)),
                         processing_class=tokenizer, peft_config=lora.lora_config(settings, "causal"),
                         callbacks=[step_logger("sft")])
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start

    # 4. save the adapter atomically, then register it
    try:
        trainer.model.save_pretrained(work / "adapter")
        shutil.rmtree(final, ignore_errors=True)
        (work / "adapter").rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = max(int(result.global_step), 1)
    metrics = {
        "train/loss": float(result.training_loss),
        **loss_metrics(trainer.state.log_history),
        "train/rows": frame.height,
        "train/steps": int(result.global_step),
        "train/seconds": round(seconds, 3),
        "train/seconds_per_step": round(seconds / steps, 3),
        "history": step_history(trainer.state.log_history),  # per step: the report's curves
    }
    version = ModelVersion(
        model_id=model_id, stage="sft", base_model=settings.retrospective.model, adapter_path=final,
        dataset=data.dataset, dataset_version=data.version, parent_model_id=None,
        config=settings.model_dump(mode="json"), metrics=metrics,
    )
    register_model_version(lake, version)
    log.info("sft %s: %d rows of %s, %d steps, loss %.3f -> %s", model_id, frame.height, data.label,
             result.global_step, result.training_loss, final)
    return version
