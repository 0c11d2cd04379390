"""What every training stage shares: the LoRA config, loading the retrospective base model and its
tokenizer the same way, model ids and adapter folders, and turning an adapter back into a model.

Every adapter in the registry is a plain peft folder that loads on the base model alone
(`load_policy`), so a backend needs only (base model, adapter path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any, Literal

import polars as pl
import torch

from retro.config import Settings
from retro.errors import ModelNotFoundError
from retro.llm.hf import fit_pad, use_pad_token
from retro.provenance import code_version
from retro.store.artifacts import adapter_place

log = logging.getLogger(__name__)

# Training runs in float32: bf16 matmuls are slow on CPUs without AMX, and the adapters are small.
TRAIN_DTYPE = torch.float32


def lora_config(settings: Settings, task: Literal["causal", "seq-cls"] = "causal"):
    """The one LoRA shape of every stage (rank, alpha, dropout from settings.train), on all linear layers."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=settings.train.lora_r,
        lora_alpha=settings.train.lora_alpha,
        lora_dropout=settings.train.lora_dropout,
        target_modules="all-linear",  # attention and MLP projections; the LM head / score head excluded
        bias="none",
        task_type=TaskType.CAUSAL_LM if task == "causal" else TaskType.SEQ_CLS,  # SEQ_CLS also trains `score`
    )


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    random.seed(seed)
    set_seed(seed)


def seeded_base(settings: Settings) -> tuple[Path, Any]:
    """How every stage starts: seeds from config, then the retrospective base model's folder and tokenizer."""
    seed_everything(settings.train.seed)
    base = base_model_path(settings)
    return base, load_tokenizer(base)


def base_model_path(settings: Settings) -> Path:
    """The retrospective model's HF folder ("embedded" converts the shipped GGUF once)."""
    from retro.llm.embedded import resolve_model_path

    return resolve_model_path(settings, settings.retrospective.model)


def load_tokenizer(path: Path):
    """The base tokenizer, padding as generation does (retro.llm.hf.use_pad_token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    use_pad_token(tokenizer)
    if tokenizer.chat_template is None:
        raise ModelNotFoundError(f"the tokenizer in {path} has no chat template: use an instruct model folder")
    return tokenizer


def load_causal_lm(path: Path, tokenizer, dtype: torch.dtype = TRAIN_DTYPE):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    fit_pad(model, tokenizer)
    return model


def load_classifier(path: Path, tokenizer, dtype: torch.dtype = TRAIN_DTYPE):
    """A one-logit sequence classifier on the base model (its `score` head starts random)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    fit_pad(model, tokenizer)
    return model


def load_policy(base_path: Path, adapter_path: Path | None, tokenizer, merge: bool = True,
                dtype: torch.dtype = TRAIN_DTYPE):
    """The base causal LM with an adapter applied (merged into the weights by default); None = the base."""
    model = load_causal_lm(base_path, tokenizer, dtype)
    if adapter_path is None:
        return model
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter_path))
    return model.merge_and_unload() if merge else model


def load_reward_model(base_path: Path, adapter_path: Path, tokenizer, dtype: torch.dtype = TRAIN_DTYPE):
    """The trained reward model as one plain sequence classifier (adapter and score head merged in)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_classifier(base_path, tokenizer, dtype), str(adapter_path))
    return model.merge_and_unload()


def model_id_for(settings: Settings, stage: str, frame: pl.DataFrame, parents: tuple[str | None, ...] = ()) -> str:
    """A content address: the stage, its training rows, its parent adapters, the training settings, the
    base model and the code. A rerun of a night (or of `retro train`) on the same data finds the model
    it trained before instead of training a twin; new rows, settings or code give a new id."""
    rows = frame.hash_rows(seed=0).to_numpy().tobytes()  # one 64-bit hash per row, in order
    key = {"stage": stage, "base": settings.retrospective.model, "parents": list(parents), "code": code_version(),
           "train": settings.train.model_dump(mode="json"), "dataset": settings.dataset.model_dump(mode="json"),
           "columns": frame.columns, "rows": hashlib.sha256(rows).hexdigest()}
    return f"{stage}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"


def adapter_dir(settings: Settings, model_id: str) -> Path:
    return (settings.home / adapter_place(model_id)).resolve()


def new_adapter(settings: Settings, model_id: str) -> tuple[Path, Path]:
    """(final folder, work folder): a stage trains into `work` and renames it to `final`."""
    final = adapter_dir(settings, model_id)
    return final, final.with_name(f".{model_id}.tmp")


def chat_prompt(tokenizer, prompt: str) -> str:
    """The reflection prompt as the retrospective model sees it: one user turn, then the assistant's."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def reflection_budget(settings: Settings, frame: pl.DataFrame) -> int:
    """New tokens of a sampled reflection in training: retrospective.max_new_tokens when set, else the largest
    budget of the environments whose prompts `frame` (an `env` column) holds, as the rollouts wrote them.
    An environment this machine does not have (a plugin installed only where the rollouts ran) counts with
    the default budget: training needs the rows, not the environment."""
    from retro.envs import available_envs, env_class
    from retro.envs.base import reflection_tokens

    envs = frame["env"].unique().to_list() if "env" in frame.columns else []
    known = available_envs()
    declared = [env_class(e) if e in known else None for e in envs]  # None declares nothing: the default
    return reflection_tokens(settings.retrospective.max_new_tokens, declared)


def micro_batch(batch_size: int) -> int:
    """Sequences per forward/backward pass of SFT and the reward model. On CPU, memory is the limit
    (fp32 logits over a 49k-token vocabulary for every position), so sequences go one at a time and
    the Trainer accumulates gradients up to `batch_size`; on a GPU the whole batch goes at once."""
    return batch_size if torch.cuda.is_available() else 1


def training_args(settings: Settings, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The TrainingArguments every stage shares: no reporting, no checkpoints, seeds from config, fp32,
    an optimizer step per `train.batch_size` sequences."""
    micro = micro_batch(settings.train.batch_size)
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "seed": settings.train.seed,
        "data_seed": settings.train.seed,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": max(settings.train.batch_size // micro, 1),
        "save_strategy": "no",
        "logging_steps": 1,
        "bf16": False,
        "gradient_checkpointing": False,  # trl turns it on by default; small models on CPU only pay its cost
        "fp16": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
    }
    args.update(overrides)
    return args
