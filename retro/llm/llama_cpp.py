"""llama.cpp's GGUF converters, from PyPI alone: the `llama-cpp-python` sdist carries llama.cpp's sources,
whose `convert_lora_to_gguf.py` turns a trained PEFT adapter into the LoRA GGUF that llama.cpp loads (the
in-process engine, retro/llm/engine.py, or any llama-server). Nothing is compiled: serving is the
`xllamacpp` wheel's job. The sources are downloaded and unpacked once, on first use, into
`~/.cache/retro/llama.cpp-<version>/src` (or $RETRO_LLAMA_CPP_DIR/src).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from retro.errors import ModelNotFoundError

VERSION = "0.3.36"  # llama-cpp-python, whose vendor/llama.cpp is the llama.cpp we convert with
# The converters' Python needs beyond this project's (torch, transformers, safetensors, their own gguf-py):
# convert_hf_to_gguf.py imports sentencepiece before it looks for a tokenizer.model (requirements/ of llama.cpp);
# it is a dependency of this package (pyproject.toml).


def home() -> Path:
    return Path(os.environ.get("RETRO_LLAMA_CPP_DIR") or Path.home() / ".cache" / "retro" / f"llama.cpp-{VERSION}")


def source_dir() -> Path:
    return home() / "src"


def converter(script: str) -> Path:
    """One of llama.cpp's convert scripts (convert_hf_to_gguf.py, convert_lora_to_gguf.py), fetched on first use."""
    path = fetch_source() / script
    if not path.is_file():
        raise ModelNotFoundError(f"llama.cpp's {script} is not in {source_dir()}: delete that folder to fetch the "
                                 f"sources again (llama-cpp-python=={VERSION} from PyPI)")
    return path


def convert_lora(adapter: Path, base: Path, out: Path, outtype: str = "f32") -> Path:
    """A PEFT adapter folder as llama.cpp's LoRA GGUF at `out` (replaced atomically: no half file is trusted)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    convert("convert_lora_to_gguf.py", [str(adapter), "--base", str(base), "--outfile", str(partial),
                                        "--outtype", outtype])
    partial.replace(out)
    return out


def convert(script: str, args: list[str]) -> None:
    """Run a convert script with this Python (torch, transformers and safetensors are here already);
    its own gguf-py, next to it, is the one it imports."""
    done = subprocess.run([sys.executable, str(converter(script)), *args], capture_output=True, text=True, check=False)
    if done.returncode:
        tail = " ".join(done.stderr.strip().splitlines()[-1:]) or f"exit code {done.returncode}"
        raise ModelNotFoundError(f"llama.cpp's {script} failed ({tail[:300]}): rerun it by hand to see why: "
                                 f"{sys.executable} {converter(script)} {' '.join(args)}")


def fetch_source() -> Path:
    """Unpack llama.cpp's tree from the sdist into `source_dir()` (atomically; skipped when there)."""
    if (source_dir() / "CMakeLists.txt").is_file():
        return source_dir()
    home().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home()) as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                              f"llama-cpp-python=={VERSION}", "-d", tmp], capture_output=True, text=True, check=False)
        if got.returncode:
            why = " ".join(got.stderr.strip().splitlines()[-1:])[:200]
            raise ModelNotFoundError(f"could not download llama.cpp's converters (llama-cpp-python=={VERSION} sdist "
                                     f"from PyPI: {why}): check pip's index and network, or set RETRO_LLAMA_CPP_DIR "
                                     "to a folder whose src/ holds llama.cpp's sources")
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        with tarfile.open(next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))) as sdist:
            members = [m for m in sdist.getmembers() if m.name.startswith(prefix)]
            sdist.extractall(tmp, members=members, filter="data")
        shutil.rmtree(source_dir(), ignore_errors=True)
        Path(tmp, prefix).rename(source_dir())
    return source_dir()
