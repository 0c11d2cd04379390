"""A trained adapter on the in-process llama.cpp engine: an adapter of this project's shape (r 8, all linear
layers) is exported once to llama.cpp's LoRA GGUF (its own converter, from PyPI's llama-cpp-python sdist),
loaded at engine start and named per request; retroformer mode runs on it. Slow: the first run downloads and
unpacks the converter's sources."""

from __future__ import annotations

import pytest
import torch

from retro.agent.request import rollout_request
from retro.config import load_settings
from retro.llm import GenParams, ensure_embedded, make_llm
from retro.llm import engine as engine_mod
from retro.orchestrate.rollout import rollout
from retro.store import Lake
from retro.store.registry import ModelVersion, register_model_version

pytestmark = pytest.mark.slow
ADAPTER = "ppo-llamacpp1"
PROMPT = [{"role": "user", "content": "Tell me a short story about a dragon."}]  # open-ended: the adapter shows


def make_adapter(settings) -> None:
    """A LoRA adapter on the embedded model whose B matrices are not zero, so it changes what the model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ensure_embedded(settings), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.2)  # 0.05 still leaves the 24 greedy tokens as they were
    folder = settings.models_dir / "adapters" / ADAPTER
    model.save_pretrained(folder)
    register_model_version(Lake(settings), ModelVersion(model_id=ADAPTER, stage="ppo", base_model="embedded",
                                                        adapter_path=folder, dataset="ppo", dataset_version="v"))


def test_engine_serves_an_exported_adapter_in_retroformer_mode(retro_home, monkeypatch):
    monkeypatch.setenv("RETRO_RETROSPECTIVE__QUANTIZATION", "f16")  # closest to the HF copy the adapter trained on
    settings = load_settings(preset="tiny")
    make_adapter(settings)
    lake = Lake(settings)
    folder = str(settings.models_dir / "adapters" / ADAPTER)
    local = make_llm(settings.retrospective.model_copy(update={"backend": "hf", "dtype": "float32"}), settings,
                     adapter_path=folder)
    served = make_llm(settings.retrospective, settings, adapter_path=folder)
    base = make_llm(settings.retrospective, settings)
    assert served.engine is not base.engine and served.engine.spec.loras[0].name == f"{ADAPTER}.gguf"
    greedy = GenParams(max_new_tokens=24)
    # the GGUF conversion keeps the adapter: the same greedy tokens as HF + PEFT, and not the base's
    assert served.generate([PROMPT], greedy).texts == local.generate([PROMPT], greedy).texts
    assert served.generate([PROMPT], greedy).texts != base.generate([PROMPT], greedy).texts
    request = rollout_request(settings, lake, env="hotpotqa", split="eval", mode="retroformer", tasks=2,
                              trials=2, adapter=ADAPTER)
    result = rollout(settings, lake, request)
    engine_mod.stop_all()
    steps = lake.read("SELECT count(*) AS n, sum((NOT valid)::INT) AS invalid FROM lake.steps").row(0, named=True)
    print(f"engine rollout: {steps['invalid']} of {steps['n']} actions invalid, {result.seconds:.0f} s, "
          f"{result.tokens_per_second:.1f} tok/s")
    assert steps["n"] > 0 and steps["invalid"] < steps["n"] / 2
    run = lake.read("SELECT actor_model, retro_model, retro_model_version FROM lake.runs").row(0)
    version = engine_mod.version()
    assert run == (f"embedded@llama.cpp-{version}:q8_0", f"embedded@llama.cpp-{version}:f16+{ADAPTER}", ADAPTER)
    versions = lake.read("SELECT DISTINCT model_version FROM lake.reflections")["model_version"].to_list()
    assert versions in ([ADAPTER], [])  # [] only if every task was solved at once
