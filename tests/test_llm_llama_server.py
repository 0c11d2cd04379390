"""A real llama.cpp llama-server (`just llama-server`) serving the embedded SmolLM2 as the actor, and an adapter
of this project's shape (r 8, all linear layers) exported with `retro models export --gguf` as the
retrospective model in retroformer mode. Slow; skipped when the server is not built."""

from __future__ import annotations

import pytest
import torch

from retro.agent.request import rollout_request
from retro.config import load_settings
from retro.llm import GenParams, ensure_embedded, llama_cpp, make_llm
from retro.orchestrate.rollout import rollout
from retro.store import Lake
from retro.store.registry import ModelVersion, register_model_version
from retro.train.export import export_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(llama_cpp.server_binary() is None, reason="llama-server is not built: run `just llama-server`"),
]
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


def test_llama_server_acts_and_serves_an_exported_adapter(retro_home, monkeypatch):
    settings = load_settings(preset="tiny")
    make_adapter(settings)
    lake = Lake(settings)
    lora = export_gguf(settings, lake, ADAPTER)
    local = make_llm(settings.retrospective.model_copy(update={"dtype": "float32"}), settings,
                     adapter_path=str(settings.models_dir / "adapters" / ADAPTER))
    with llama_cpp.serve(llama_cpp.embedded_gguf(settings, "f32"), loras=[lora], slots=4) as url:
        for role in ("ACTOR", "RETROSPECTIVE"):
            for name, value in {"BACKEND": "openai", "MODEL": "embedded", "BASE_URL": url}.items():
                monkeypatch.setenv(f"RETRO_{role}__{name}", value)
        monkeypatch.setenv("RETRO_RETROSPECTIVE__ADAPTER_SERVER", "llama-server")
        settings = load_settings(preset="tiny")
        greedy = GenParams(max_new_tokens=24)
        served = make_llm(settings.retrospective, settings, adapter_path=str(settings.models_dir / "adapters" / ADAPTER))
        base = make_llm(settings.actor, settings)
        # the GGUF conversion keeps the adapter: the same greedy tokens as HF + PEFT, and not the base's
        assert served.generate([PROMPT], greedy).texts == local.generate([PROMPT], greedy).texts
        assert served.generate([PROMPT], greedy).texts != base.generate([PROMPT], greedy).texts
        request = rollout_request(settings, lake, env="hotpotqa", split="eval", mode="retroformer", tasks=2,
                                  trials=2, adapter=ADAPTER)
        result = rollout(settings, lake, request)
    steps = lake.read("SELECT count(*) AS n, sum((NOT valid)::INT) AS invalid FROM lake.steps").row(0, named=True)
    print(f"llama-server rollout: {steps['invalid']} of {steps['n']} actions invalid, {result.seconds:.0f} s, "
          f"{result.tokens_per_second:.1f} tok/s, {result.retried} retried")
    assert steps["n"] > 0 and steps["invalid"] < steps["n"] / 2
    assert lake.read("SELECT retro_model, retro_model_version FROM lake.runs").row(0) == (f"embedded+{ADAPTER}",
                                                                                         ADAPTER)
    versions = lake.read("SELECT DISTINCT model_version FROM lake.reflections")["model_version"].to_list()
    assert versions in ([ADAPTER], [])  # [] only if every task was solved at once
