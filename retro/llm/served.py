"""What an OpenAI-compatible server does beyond the API, found out once per server rather than guessed per
reply: how it continues a prefilled assistant turn, and how it names a trained LoRA adapter.

Continuing a turn. The ReAct actor prefills the assistant's turn ("...Observation 2: ...\nThought 3:") and
needs only what follows. vLLM answers the continuation (`continue_final_message`); llama.cpp's llama-server
(some versions) answers the prefilled text followed by the continuation; a server that cannot continue
closes the turn and starts a new answer, and every action of the run would be junk. One probe (`PROBE`)
tells the three apart: its prefill starts as no fresh answer would, and ends inside a number.

Adapters. vLLM serves a LoRA adapter as a model of its own name (`--lora-modules NAME=PATH`, or loaded at
run time); llama-server applies the adapters given with `--lora FILE.gguf` by index, per request
(`"lora": [{"id": N, "scale": 1}]`). Either way the adapter's name is its folder's, i.e. its model_id,
and llama-server's file is `<model_id>.gguf` (`retro models export --gguf MODEL_ID`). A request that names
no adapter gets llama-server's start-up scales (1 for every --lora file, `--lora-init-without-apply` or not,
in llama.cpp of llama-cpp-python 0.3.36) and may reuse a prompt cached under an adapter; so requests for the
base model on a llama-server that holds adapters name each at scale 0 (`base_model_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from retro.errors import BackendUnreachableError, ConfigError

CONTINUES, ECHOES = "continues", "echoes"
PROBE = [
    {"role": "user", "content": "Count from 1 to 20, separated by commas."},
    {"role": "assistant", "content": "Counting on from six: 6, 7, 8, 9, 1"},
]
PROBE_NEXT = "0"  # "…9, 1" goes on "0, 11, …"; a new answer starts with a word or "1", never "0"
SERVERS_THAT_CONTINUE = "vLLM, llama.cpp's llama-server (without --no-prefill-assistant) and Ollama do"


def prefilled(prompt: Any) -> bool:
    """A chat whose last message is the assistant's, to be continued."""
    return isinstance(prompt, list) and bool(prompt) and prompt[-1]["role"] == "assistant"


def strip_echo(text: str, prefill: str) -> str | None:
    """The continuation in a reply that starts with the prefilled text (whitespace at its ends aside), or None
    when the reply does not start with it."""
    if text.startswith(prefill):
        return text[len(prefill):]
    head, body = text.lstrip(), prefill.strip()
    return head[len(body):] if body and head.startswith(body) else None


def prefill_mode(reply: str) -> str | None:
    """How a server answered PROBE: ECHOES, CONTINUES, or None when it did not continue the turn."""
    rest = strip_echo(reply, PROBE[-1]["content"])
    mode = CONTINUES if rest is None else ECHOES
    return mode if (reply if rest is None else rest).lstrip().startswith(PROBE_NEXT) else None


def cannot_continue(base_url: str, prefix: str, why: str) -> ConfigError:
    return ConfigError(
        f"LLM server at {base_url} does not continue a prefilled assistant turn ({why}), which the ReAct actor "
        f"needs: {SERVERS_THAT_CONTINUE}; if this one does, set {prefix}__PREFILL=continues or echoes"
    )


# -- adapters -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServedAdapter:
    """Where a trained adapter answers: the server kind, its URL, the adapter's name, llama-server's index."""

    server: str  # vllm | llama-server
    base_url: str
    name: str  # the adapter folder's name: its model_id
    lora_id: int | None = None  # llama-server: the index of <name>.gguf among its --lora adapters

    def request_fields(self) -> dict[str, Any]:
        """What a request adds to name this adapter."""
        if self.server == "vllm":
            return {"model": self.name}
        return {"lora": [{"id": self.lora_id, "scale": 1.0}]}


def server_root(base_url: str) -> str:
    """llama-server's own endpoints (/lora-adapters) sit beside /v1, not under it."""
    return base_url.removesuffix("/v1")


def base_model_fields(client: httpx.Client, base_url: str) -> dict[str, Any]:
    """What a request for the base model adds: every LoRA adapter of a llama-server at scale 0; nothing on a
    server without /lora-adapters (vLLM, Ollama, OpenAI)."""
    try:
        listed = client.get(server_root(base_url) + "/lora-adapters")
        entries = listed.json() if listed.status_code == 200 else []
        return {"lora": [{"id": int(e["id"]), "scale": 0.0} for e in entries]} if entries else {}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}


def find_adapter(client: httpx.Client, base_url: str, server: str, adapter_path: str, load: bool,
                 prefix: str) -> ServedAdapter:
    """Check that the server serves this adapter (loading it on vLLM when `load`); a one-line error if not."""
    name = Path(adapter_path).name
    try:
        if server == "vllm":
            return _find_on_vllm(client, base_url, name, adapter_path, load, prefix)
        return _find_on_llama_server(client, base_url, name, prefix)
    except httpx.TransportError as err:
        raise BackendUnreachableError(f"LLM server at {base_url} is unreachable ({err}): start it or fix "
                                      f"{prefix}__BASE_URL") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # not the JSON a vLLM or llama-server sends
        raise ConfigError(f"LLM server at {base_url} answered an unexpected list of adapters ({type(err).__name__}: "
                          f"{str(err)[:100]}): is it {server}? Else fix {prefix}__ADAPTER_SERVER") from None


def _find_on_vllm(client: httpx.Client, base_url: str, name: str, path: str, load: bool,
                  prefix: str) -> ServedAdapter:
    served = ServedAdapter("vllm", base_url, name)
    listed = client.get(base_url + "/models")
    if listed.status_code == 200 and name in {m.get("id") for m in listed.json().get("data", [])}:
        return served
    if load:
        loaded = client.post(base_url + "/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if loaded.status_code == 200 or "already" in loaded.text:
            return served
        raise ConfigError(f"vLLM at {base_url} did not load adapter {name} from {path} (HTTP {loaded.status_code}: "
                          f"{' '.join(loaded.text.split())[:200]}): start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "
                          "--enable-lora, where it can read that folder")
    raise ConfigError(f"vLLM at {base_url} does not serve adapter {name}: start it with --enable-lora "
                      f"--lora-modules {name}={path}, or set {prefix}__ADAPTER_LOAD=true to load it at run time")


def _find_on_llama_server(client: httpx.Client, base_url: str, name: str, prefix: str) -> ServedAdapter:
    listed = client.get(server_root(base_url) + "/lora-adapters")
    if listed.status_code != 200:
        raise ConfigError(f"LLM server at {base_url} lists no LoRA adapters (GET /lora-adapters: HTTP "
                          f"{listed.status_code}): is it llama.cpp's llama-server? Else fix {prefix}__ADAPTER_SERVER")
    adapters = listed.json()
    for entry in adapters:
        if Path(str(entry.get("path", ""))).stem == name:
            return ServedAdapter("llama-server", base_url, name, int(entry["id"]))
    have = ", ".join(Path(str(e.get("path", ""))).name for e in adapters) or "none"
    raise ConfigError(f"llama-server at {base_url} has no adapter {name}.gguf (it has: {have}): run `retro models "
                      f"export --gguf {name}`, then start llama-server with --lora <that file>")
