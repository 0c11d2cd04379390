"""llama.cpp on this machine, from PyPI alone: the `llama-cpp-python` sdist carries llama.cpp's sources,
which give the GGUF converters (`retro models export --gguf`, the served bench) and, built once,
`llama-server` (the CPU peer of the embedded backend, and the slow served tests).

    just llama-server    # = python -m retro.llm.llama_cpp: download, unpack, cmake, once

Everything lives in one cache folder, `~/.cache/retro/llama.cpp-<version>` (or $RETRO_LLAMA_CPP_DIR):
`src/` (llama.cpp's tree) and `build/bin/llama-server`. The web UI is not built and not downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from retro.errors import ModelNotFoundError

VERSION = "0.3.36"  # llama-cpp-python, whose vendor/llama.cpp is the llama.cpp we build and convert with
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",  # no npm build, no asset download
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_OPENSSL=OFF",
)
GET_IT = "run `just llama-server` (builds llama.cpp from PyPI's llama-cpp-python sdist, once)"


def home() -> Path:
    return Path(os.environ.get("RETRO_LLAMA_CPP_DIR") or Path.home() / ".cache" / "retro" / f"llama.cpp-{VERSION}")


def source_dir() -> Path:
    return home() / "src"


def server_binary() -> Path | None:
    """The built llama-server, or None before `just llama-server`."""
    path = home() / "build" / "bin" / "llama-server"
    return path if path.is_file() else None


def converter(script: str) -> Path:
    """One of llama.cpp's convert scripts (convert_hf_to_gguf.py, convert_lora_to_gguf.py)."""
    path = source_dir() / script
    if not path.is_file():
        raise ModelNotFoundError(f"llama.cpp's {script} is not in {source_dir()}: {GET_IT}")
    return path


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
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={VERSION}", "-d", tmp], check=True)
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        with tarfile.open(next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))) as sdist:
            members = [m for m in sdist.getmembers() if m.name.startswith(prefix)]
            sdist.extractall(tmp, members=members, filter="data")
        shutil.rmtree(source_dir(), ignore_errors=True)
        Path(tmp, prefix).rename(source_dir())
    return source_dir()


def build_server(jobs: int) -> Path:
    """Configure and build the llama-server target only (minutes of CPU: niced); skipped when built."""
    found = server_binary()
    if found:
        return found
    src, build = fetch_source(), home() / "build"
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    subprocess.run([*nice, "cmake", "-S", str(src), "-B", str(build), *CMAKE_OPTIONS], check=True)
    subprocess.run([*nice, "cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], check=True)
    return home() / "build" / "bin" / "llama-server"


def main() -> None:
    parser = argparse.ArgumentParser(description="Build llama.cpp's llama-server from PyPI's llama-cpp-python sdist.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    args = parser.parse_args()
    if not shutil.which("cmake"):
        sys.exit("cmake is needed: apt-get install cmake, or pip install cmake")
    start = time.perf_counter()
    path = build_server(args.jobs)
    print(f"llama-server: {path} ({time.perf_counter() - start:.0f} s); llama.cpp sources: {source_dir()}")


if __name__ == "__main__":
    main()
