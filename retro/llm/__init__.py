"""Model backends behind one batched interface (retro.llm.base.LLM), chosen by `make_llm`.

Backends: `llamacpp` (the default: the embedded SmolLM2 or a GGUF file, on llama.cpp inside this process,
reached through the openai backend), `hf` (a local HF folder, optional LoRA adapter), `openai` (any
OpenAI-compatible server), and `ScriptedLLM`, which tests construct directly.
"""

from __future__ import annotations

from retro.config import ModelSettings, Settings
from retro.errors import ConfigError
from retro.llm.base import LLM, Generation, GenParams, Prompt
from retro.llm.embedded import ensure_embedded, resolve_model_path
from retro.llm.scripted import ScriptedLLM

__all__ = [
    "LLM",
    "GenParams",
    "Generation",
    "Prompt",
    "ScriptedLLM",
    "ensure_embedded",
    "make_llm",
    "resolve_model_path",
]


def make_llm(
    model_settings: ModelSettings,
    settings: Settings,
    adapter_path: str | None = None,
    name: str | None = None,
    batch: int | None = None,
) -> LLM:
    """The backend `model_settings` names; `adapter_path` (a LoRA folder) loads on `hf`, and on `openai` names
    the adapter the server serves (`adapter_server` says how). `batch`: the prompts a run sends at once (its
    episodes stepping together), which sizes the in-process engine's slots."""
    role = "RETRO_RETROSPECTIVE" if model_settings is settings.retrospective else "RETRO_ACTOR"
    if model_settings.backend == "llamacpp":
        from retro.llm.local import local_backend  # the in-process llama.cpp engine

        return local_backend(model_settings, settings, adapter_path, name, role, batch)
    if model_settings.backend == "hf":
        path = resolve_model_path(settings, model_settings.model)
        from retro.llm.hf import HFBackend  # torch and transformers load only when a local model is wanted

        return HFBackend(path, model_settings, adapter_path=adapter_path, name=name)
    if model_settings.backend == "openai":
        if adapter_path is not None and model_settings.adapter_server == "none":
            raise ConfigError(
                f"adapter {adapter_path} is not served by {role}__BACKEND=openai: serve it and set "
                f"{role}__ADAPTER_SERVER=vllm or llama-server (README, Served adapters), or set {role}__BACKEND=hf"
            )
        from retro.llm.openai_compat import OpenAIBackend

        return OpenAIBackend(model_settings, name=name, setting_prefix=role, adapter_path=adapter_path)
    raise ConfigError(
        f"{role}__BACKEND=scripted cannot be built from settings (scripted policies are test code): "
        "set it to hf or openai"
    )

