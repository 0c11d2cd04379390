"""llama.cpp on this machine, from PyPI alone: the `llama-cpp-python` sdist carries llama.cpp's sources,
which give the GGUF converters (`retro models export --gguf`, the served bench) and, built once,
`llama-server` (the CPU peer of the embedded backend, and the slow served tests), which `serve` runs.

    just llama-server    # = python -m retro.llm.llama_cpp: download, unpack, cmake, once

Everything lives in one cache folder, `~/.cache/retro/llama.cpp-<version>` (or $RETRO_LLAMA_CPP_DIR):
`src/` (llama.cpp's tree), `build/bin/llama-server` and `models/` (GGUFs of the embedded model). The web
UI is not built and not downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from retro.config import Settings
from retro.errors import ModelNotFoundError

VERSION = "0.3.36"  # llama-cpp-python, whose vendor/llama.cpp is the llama.cpp we build and convert with
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",  # no npm build, no asset download
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_OPENSSL=OFF",
)
# The converters' Python needs beyond this project's (torch, transformers, safetensors, their own gguf-py):
# convert_hf_to_gguf.py imports sentencepiece before it looks for a tokenizer.model (requirements/ of llama.cpp).
CONVERTER_NEEDS = ("sentencepiece==0.2.1",)
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
    """Configure and build the llama-server target only (minutes of CPU: niced); skipped when built. The
    build's wall time is kept in build/seconds for the bench."""
    found = server_binary()
    if found:
        return found
    start = time.perf_counter()
    src, build = fetch_source(), home() / "build"
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    subprocess.run([*nice, "cmake", "-S", str(src), "-B", str(build), *CMAKE_OPTIONS], check=True)
    subprocess.run([*nice, "cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], check=True)
    (build / "seconds").write_text(f"{time.perf_counter() - start:.0f} s with -j {jobs}\n")
    return home() / "build" / "bin" / "llama-server"


def embedded_gguf(settings: Settings, outtype: str) -> Path:
    """The embedded SmolLM2 as a GGUF of `outtype` (f32, q8_0, ...), converted once from its HF cache by
    llama.cpp's convert_hf_to_gguf.py, so llama-server runs the very weights the embedded backend does."""
    from retro.llm.embedded import CACHE_NAME, ensure_embedded

    out = home() / "models" / f"{CACHE_NAME}-{outtype}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        convert("convert_hf_to_gguf.py", [str(ensure_embedded(settings)), "--outfile", str(partial),
                                          "--outtype", outtype])
        partial.replace(out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: Path, loras: Sequence[Path] = (), threads: int | None = None, slots: int = 4, context: int = 3072,
          log: Path | None = None, ready_s: float = 120.0) -> Iterator[str]:
    """Run llama-server on 127.0.0.1 with `model` (and LoRA files, which the openai backend switches per
    request), `slots` parallel requests of `context` tokens each (the actor's default 2048-token window, its
    new tokens, and room for a token count that is an estimate); yields its base URL (…/v1) once healthy."""
    binary = server_binary()
    if binary is None:
        raise ModelNotFoundError(f"llama-server is not built in {home()}: {GET_IT}")
    port, threads = _free_port(), threads or os.cpu_count() or 1
    args = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
            "-tb", str(threads), "-np", str(slots), "-c", str(slots * context), "--no-webui"]
    for lora in loras:
        args += ["--lora", str(lora)]
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + ready_s
            while not _healthy(root):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ModelNotFoundError(f"llama-server did not start ({' '.join(args)}): see {log or 'its log'}")
                time.sleep(0.2)
            yield root + "/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(root: str) -> bool:
    try:
        return httpx.get(root + "/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description="Build llama.cpp's llama-server from PyPI's llama-cpp-python sdist.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    args = parser.parse_args()
    if not shutil.which("cmake"):
        sys.exit("cmake is needed: apt-get install cmake, or pip install cmake")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *CONVERTER_NEEDS], check=True)
    path = build_server(args.jobs)
    print(f"llama-server: {path} ({time.perf_counter() - start:.0f} s); llama.cpp sources: {source_dir()}")


if __name__ == "__main__":
    main()
