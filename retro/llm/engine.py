"""llama.cpp's own server inside this process (the `xllamacpp` wheel): the engine of the embedded models.

Why: a prebuilt wheel, nothing to compile, and the server brings what a private engine would grow by hand
(continuous batching over slots, a prompt cache per slot, per-request LoRA adapters, grammar-constrained
decoding). The server listens on 127.0.0.1 at a port the OS picks and lives as long as this process (a
SIGKILL takes it along: it is threads of this process, not a child). The runner reaches it through the
`openai` backend, the same path as any served model: prefill, retries, token usage, adapters, errors.

One engine per (GGUF, LoRA files) in a process: the actor and a base retrospective model share one; a
retrospective model with a trained adapter gets its own (the adapter's GGUF is loaded at start and named per
request; base-model requests on it set its scale to 0, as on any llama-server).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from retro.errors import ModelNotFoundError

log = logging.getLogger(__name__)

NAME = "llama.cpp"
QUIET = 1  # llama.cpp's log verbosity: errors and warnings only (its own log goes to stderr, not Python's)


def version() -> str:
    """The wheel's version, which carries llama.cpp's build number (2026.10.11549 = b11549)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("xllamacpp")
    except PackageNotFoundError:
        raise ModelNotFoundError("xllamacpp (llama.cpp in-process) is not installed: run `just setup` "
                                 "(or pip install xllamacpp==2026.10.11549)") from None


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota (a container's
    `--cpus`) and by OMP_NUM_THREADS when set (a Dask worker gets 1), never os.cpu_count(), the host's."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        cpus = min(cpus, max(1, int(os.environ["OMP_NUM_THREADS"])))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cpus)


@dataclass(frozen=True)
class EngineSpec:
    """What an engine serves and how: the model file, LoRA files, slots and their context, threads."""

    gguf: Path
    loras: tuple[Path, ...] = ()
    slots: int = 8  # sequences decoded together (llama.cpp's -np); the openai backend's concurrency
    slot_tokens: int = 2304  # context per slot: prompt window + new tokens
    threads: int = 0  # 0: usable_cpus()


class Engine:
    """A running llama.cpp server; `url` is its OpenAI-compatible base URL (…/v1)."""

    def __init__(self, spec: EngineSpec):
        import xllamacpp

        self.spec = spec
        self.threads = spec.threads or usable_cpus()
        params = xllamacpp.CommonParams()
        params.model.path = str(spec.gguf)
        params.n_parallel = spec.slots
        params.n_ctx = spec.slots * spec.slot_tokens
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.port = 0  # the OS picks a free one: no clash with another run or a user's server
        params.hostnames = ["127.0.0.1"]
        params.verbosity = QUIET
        params.warmup = False
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(p), 0.0) for p in spec.loras]
        params.lora_init_without_apply = True  # a request names its adapter; none applies unasked
        started = time.perf_counter()
        try:
            self._server = xllamacpp.Server(params)
        except Exception as err:  # noqa: BLE001 (the wheel raises plain RuntimeError/ValueError on a bad file)
            raise _start_error(spec, err) from None
        self.url = self._server.listening_address.rstrip("/") + "/v1"
        log.info("%s %s serving %s on %s (%d slots x %d tokens, %d threads, %.1f s)", NAME, version(),
                 spec.gguf.name, self.url, spec.slots, spec.slot_tokens, self.threads, time.perf_counter() - started)

    def alive(self) -> bool:
        try:
            return self._server is not None and httpx.get(self.url.removesuffix("/v1") + "/health", timeout=5).is_success
        except httpx.HTTPError:
            return False

    def describe(self, quantization: str) -> dict[str, object]:
        """What `retro models check` prints and the bench records."""
        return {"engine": NAME, "version": version(), "gguf": self.spec.gguf.name, "quantization": quantization,
                "threads": self.threads, "slots": self.spec.slots, "slot_tokens": self.spec.slot_tokens,
                "loras": [p.name for p in self.spec.loras]}

    def stop(self) -> None:
        server, self._server = getattr(self, "_server", None), None
        del server  # the wheel's destructor ends its loop and frees the model


def _start_error(spec: EngineSpec, err: Exception) -> Exception:
    """One line naming the fix for an engine that did not start."""
    for path in (spec.gguf, *spec.loras):
        if not path.is_file():
            return ModelNotFoundError(f"GGUF file {path} does not exist: rerun to rebuild the embedded model's GGUF, "
                                      "or fix RETRO_ACTOR__MODEL / the adapter export (retro models export --gguf)")
    why = " ".join(str(err).split())[:200] or type(err).__name__
    if spec.loras:
        return ModelNotFoundError(f"llama.cpp could not load {spec.gguf.name} with adapter(s) "
                                  f"{', '.join(p.name for p in spec.loras)} ({why}): an adapter exported for another "
                                  "base model? Re-export it (retro models export --gguf MODEL_ID) or pick another")
    return ModelNotFoundError(f"llama.cpp could not load {spec.gguf} ({why}): the file is damaged or not a model GGUF; "
                              "delete it (the embedded one is rebuilt on the next run) or point RETRO_ACTOR__MODEL "
                              "at a good one; with too little memory, lower RETRO_ACTOR__SLOTS")


_engines: dict[EngineSpec, Engine] = {}
_lock = threading.Lock()


def engine_for(spec: EngineSpec) -> Engine:
    """The process's engine for `spec`, started on first use; one that died is started again. A running engine
    of the same model with at least as many slots serves a smaller batch too (a night's 32-slot engine serves
    its 4-task evaluation), so a process does not hold one KV cache per batch size."""
    with _lock:
        for engine in _engines.values():
            if engine._server is not None and engine.spec.slots >= spec.slots \
                    and replace(engine.spec, slots=spec.slots) == spec:
                return engine
        engine = _engines[spec] = Engine(spec)
        return engine


@atexit.register
def stop_all() -> None:
    """Stop every engine of this process (tests and long-lived processes call it too)."""
    with _lock:
        for engine in _engines.values():
            engine.stop()
        _engines.clear()
