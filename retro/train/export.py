"""A trained adapter as llama.cpp's GGUF, for llama-server's `--lora` (`retro models export --gguf MODEL_ID`).

The conversion is llama.cpp's own `convert_lora_to_gguf.py`, from llama.cpp's sources fetched once
from PyPI (retro/llm/llama_cpp.py); it reads the base model's config from the folder the adapter was trained on. The
file is named after the model_id, which is how a served backend finds the adapter among the server's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from retro.config import Settings
from retro.llm import llama_cpp, resolve_model_path
from retro.llm.base import read_adapter_config
from retro.llm.local import lora_gguf_path
from retro.store import registry
from retro.store.lake import Lake

log = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "bf16", "q8_0")  # what the converter writes; f32 keeps the adapter's numbers as trained


def gguf_file(settings: Settings, model_id: str) -> Path:
    return lora_gguf_path(settings, model_id)


def export_gguf(settings: Settings, lake: Lake, model_id: str, outtype: str = "f32") -> Path:
    """Convert the adapter of `model_id` into `$RETRO_HOME/models/gguf/<model_id>.gguf` (replaced atomically)."""
    version = registry.get_model_version(lake, model_id)
    read_adapter_config(Path(version.adapter_path), f"model version {model_id}")  # a damaged one is named first
    llama_cpp.converter("convert_lora_to_gguf.py")  # missing before the base model may take a conversion
    base = resolve_model_path(settings, version.base_model)
    out = gguf_file(settings, model_id)
    start = time.perf_counter()
    llama_cpp.convert_lora(Path(version.adapter_path), base, out, outtype)
    log.info("exported %s to %s (%s, %.0f s)", model_id, out, outtype, time.perf_counter() - start)
    return out
