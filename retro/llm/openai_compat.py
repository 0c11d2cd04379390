"""Any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenAI) behind the batched LLM interface.

One HTTP request per prompt (httpx), `concurrency` in flight. Transient failures (a timeout, 429, 5xx, a
dropped connection, malformed JSON, empty choices, an empty completion with no tokens) are retried by
tenacity with exponential backoff, each retry logged at WARNING with its reason and counted in `retried`.
A prompt still without an answer after `retries` comes back as "" with a one-line error in
`Generation.errors` naming the server and the settings to change; the runner ends the run with it, as an
outage is never a trial outcome. A server that refuses every connection is an error at once.
The API key is read from the environment at call time and never stored, logged or repeated in errors.

Servers differ where the API is silent (retro/llm/served.py): whether a prefilled assistant turn comes back
continued or echoed is probed once, before the first such prompt, and a server that cannot continue one is a
one-line error then; a trained adapter is named the way its server serves it (vLLM or llama-server).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tenacity

from retro.config import ModelSettings
from retro.errors import BackendRefusedError, BackendUnreachableError
from retro.llm import served
from retro.llm.base import Generation, GenParams, Prompt, cut_at_stop

log = logging.getLogger(__name__)

MAX_STOPS = 4  # OpenAI accepts at most 4 stop strings; the rest are applied locally by cut_at_stop
MAX_RETRY_AFTER_S = 30.0  # a server's Retry-After is honoured up to this
CALIBRATE_CHARS = 1000  # prompts this long tell characters per token (shorter ones are mostly chat template)


def estimate_tokens(text: str, chars_per_token: float = 4.0) -> int:
    """About 4 characters per token for English BPE vocabularies, until a server's usage says better."""
    return math.ceil(len(text) / chars_per_token)


def prompt_chars(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def request_body(model: str, prompt: Prompt, params: GenParams, seed: int,
                 extra: dict[str, Any] | None = None, grammar: str | None = None) -> tuple[str, dict[str, Any]]:
    """(endpoint, JSON body) for one prompt: raw text -> /completions, chat -> /chat/completions; `extra`
    names a served adapter (its model name, or llama-server's `lora`); `grammar` (GBNF) constrains the
    completion, in the field of each server that takes one (each ignores the other's)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": seed,
    }
    if params.stop:
        body["stop"] = list(params.stop[:MAX_STOPS])
    if grammar is not None:  # llama.cpp's server reads `grammar`; vLLM its structured outputs
        body |= {"grammar": grammar, "structured_outputs": {"grammar": grammar}}
    body |= extra or {}
    if isinstance(prompt, str):
        return "/completions", body | {"prompt": prompt}
    body["messages"] = prompt
    if served.prefilled(prompt):  # continue the prefilled answer (vLLM's extension, llama-server's too)
        body |= {"continue_final_message": True, "add_generation_prompt": False}
    return "/chat/completions", body


def parse_text(data: Any, chat: bool) -> str:
    """The completion text of a response; KeyError/IndexError/TypeError on a malformed one."""
    choice = data["choices"][0]
    text = choice["message"]["content"] if chat else choice["text"]
    if not isinstance(text, str):
        raise TypeError("completion text is not a string")
    return text


NOT_ABOUT_THE_REQUEST = (401, 403, 404)  # HTTP statuses refusing the key, the model or the URL, not the prompt


@dataclass
class _Result:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    unreachable: bool = False  # the last attempt could not connect at all
    refused: _Refused | None = None  # the server's refusal (HTTP 4xx: its status and reason), when it refused


class _Retry(Exception):
    """An attempt that failed in a way another attempt may not (the message is the reason)."""

    def __init__(self, reason: str, retry_after: float = 0.0, unreachable: bool = False):
        super().__init__(reason)
        self.retry_after, self.unreachable = retry_after, unreachable


class _Refused(Exception):
    """An answer another attempt would not change: HTTP 4xx, the request or the key is wrong."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.status = status


class _Unexpected(Exception):
    """A reply that contradicts what the server was probed to do (the message is the one-line error)."""


class OpenAIBackend:
    """Batched generation against an OpenAI-compatible HTTP server, with retries and a concurrency cap.

    `adapter_path`: a trained LoRA adapter the server serves (settings.adapter_server says how), checked
    on the server here, so a missing one fails before the run starts.
    """

    served = True  # a model behind a server: the runner's invalid-action guard watches it (retro/agent/guard.py)
    engine = None  # the in-process llama.cpp engine behind it (retro/llm/local.py), or None for a server
    outage_hint: str | None = None  # what an unreachable server means here, when not "start it or fix the URL"

    def __init__(
        self,
        settings: ModelSettings,
        name: str | None = None,
        setting_prefix: str = "RETRO_ACTOR",  # names the variables to fix in errors
        backoff_s: float = 1.0,  # first retry delay; doubles per attempt
        adapter_path: str | None = None,
    ):
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.model = settings.model
        suffix = f"+{Path(adapter_path).name}" if adapter_path else ""  # like the hf backend's model+adapter
        self.name = name or settings.model + suffix
        self.context_window = settings.context_window
        self.setting_prefix = setting_prefix
        self.backoff_s = backoff_s
        self.retried = 0  # retries so far, for a run's summary
        self.chars_per_token = 4.0  # the fewest seen in the server's usage: prompts are cut to the window by it
        self._count = threading.Lock()
        self.prefill = None if settings.prefill == "auto" else settings.prefill  # None until probed
        self.served_adapter: served.ServedAdapter | None = None
        self.extra: dict[str, Any] | None = None  # what every request adds to name the adapter (or none); None: ask
        if adapter_path:
            with self._client() as client:
                self.served_adapter = served.find_adapter(client, self.base_url, settings.adapter_server,
                                                          adapter_path, settings.adapter_load, setting_prefix)
            self.extra = self.served_adapter.request_fields()

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r})"

    def count_tokens(self, prompt: Prompt) -> int:
        return estimate_tokens(prompt_chars(prompt), self.chars_per_token)

    def _client(self) -> httpx.Client:
        key = os.environ.get(self.settings.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(self.settings.read_timeout_s, connect=self.settings.connect_timeout_s)
        return httpx.Client(timeout=timeout, headers=headers)

    def generate(self, prompts: list[Prompt], params: GenParams) -> Generation:
        start = time.perf_counter()
        key = os.environ.get(self.settings.api_key_env)
        with self._client() as client:
            if self.extra is None:
                self.extra = served.base_model_fields(client, self.base_url)
            if self.prefill is None and any(served.prefilled(p) for p in prompts):
                self._probe(client, key)
            workers = max(1, min(self.settings.concurrency, len(prompts)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [
                    pool.submit(self._one, client, prompt, params, params.row_seed(i), key,  # a seed per prompt
                                params.row_grammar(i))
                    for i, prompt in enumerate(prompts)
                ]
                results = [f.result() for f in futures]
        if results and all(r.unreachable for r in results):
            raise self._unreachable(results[0].error)
        return Generation(
            texts=[r.text for r in results],
            prompt_tokens=[r.prompt_tokens for r in results],
            completion_tokens=[r.completion_tokens for r in results],
            seconds=time.perf_counter() - start,
            errors=[r.error for r in results],
            refused=[r.refused is not None for r in results],
        )

    def probe_prefill(self) -> str:
        """How this server answers a prefilled assistant turn (served.CONTINUES or ECHOES), asked once."""
        if self.prefill is None:
            with self._client() as client:
                self._probe(client, os.environ.get(self.settings.api_key_env))
        return self.prefill

    def _probe(self, client: httpx.Client, key: str | None) -> None:
        """Learn once how this server answers a prefilled assistant turn (served.PROBE), or fail in one line."""
        result = self._one(client, served.PROBE, GenParams(max_new_tokens=4), 0, key)
        if result.unreachable:
            raise self._unreachable(result.error)
        if result.refused and result.refused.status in NOT_ABOUT_THE_REQUEST:
            raise BackendRefusedError(result.error)  # a wrong key or model name: not the prefilled turn's fault
        if result.refused:
            raise served.cannot_continue(self.base_url, self.setting_prefix, f"it refused one: {result.refused}")
        if result.error:
            raise BackendUnreachableError(result.error)
        self.prefill = served.prefill_mode(result.text)
        if self.prefill is None:
            asked = served.PROBE[-1]["content"]
            raise served.cannot_continue(self.base_url, self.setting_prefix,
                                         f"asked to go on from {asked!r}, it answered {result.text[:60]!r}")
        log.info("LLM server at %s %s a prefilled assistant turn", self.base_url, self.prefill)

    def _unreachable(self, why: str | None) -> BackendUnreachableError:
        if self.outage_hint:
            return BackendUnreachableError(f"LLM server at {self.base_url} is unreachable ({why}): {self.outage_hint}")
        return BackendUnreachableError(f"LLM server at {self.base_url} is unreachable ({why}): start it or fix "
                                       f"{self.setting_prefix}__BASE_URL")

    def _one(
        self, client: httpx.Client, prompt: Prompt, params: GenParams, seed: int, key: str | None,
        grammar: str | None = None,
    ) -> _Result:
        """One prompt with retries; never raises for HTTP trouble, the one-line error goes into the result."""
        path, body = request_body(self.model, prompt, params, seed, self.extra, grammar)
        url = self.base_url + path
        attempts = self.settings.retries + 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            before_sleep=lambda state: self._log_retry(url, attempts, state),
            reraise=True,
        )
        try:
            return retrying(self._attempt, client, url, body, prompt, params, key)
        except _Retry as err:
            p = self.setting_prefix
            return _Result(error=f"LLM server at {self.base_url} gave no answer in {attempts} attempts ({err}): "
                                 f"check the server, or raise {p}__READ_TIMEOUT_S or {p}__RETRIES",
                           unreachable=err.unreachable)
        except _Refused as err:
            p = self.setting_prefix
            fix = (f"give the server more context per request (llama-server: -c / -np; vLLM: --max-model-len) or "
                   f"lower {p}__CONTEXT_WINDOW" if "context" in str(err).lower() else
                   f"it takes no grammar of the actions: serve the actor with llama.cpp's server or vLLM, or set "
                   f"{p}__CONSTRAIN_ACTIONS=false" if grammar is not None and _about_grammar(str(err)) else
                   f"check {p}__MODEL and the API key in ${self.settings.api_key_env}")
            return _Result(error=f"LLM server at {self.base_url} refused the request ({err}): {fix}", refused=err)
        except _Unexpected as err:
            return _Result(error=str(err))

    def _attempt(
        self, client: httpx.Client, url: str, body: dict[str, Any], prompt: Prompt, params: GenParams, key: str | None
    ) -> _Result:
        """One request: the answer, or _Retry / _Refused saying why there is none."""
        try:
            resp = client.post(url, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise _Retry(f"cannot connect: {_scrub(str(err), key)}", unreachable=True) from None
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {self.settings.read_timeout_s:g} s") from None
        except httpx.TransportError as err:
            raise _Retry(f"{type(err).__name__}: {_scrub(str(err), key)}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}", retry_after=_retry_after(resp))
        if resp.status_code >= 400:
            raise _Refused(f"HTTP {resp.status_code}: {_one_line(_scrub(resp.text, key))[:300]}", resp.status_code)
        try:
            data = resp.json()
            text = parse_text(data, chat=not isinstance(prompt, str))
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise _Retry(f"malformed response ({type(err).__name__}: {_scrub(str(err), key)[:100]})") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        if not text and not usage.get("completion_tokens"):
            # Nothing generated at all: a faulty server. (A model that stops at once still reports its stop
            # or end token, and that empty answer is kept.)
            raise _Retry("empty completion")
        if self.prefill == served.ECHOES and served.prefilled(prompt):
            text = self._continuation(text, prompt[-1]["content"])
        text = cut_at_stop(text, params.stop)
        self._calibrate(prompt, int(usage.get("prompt_tokens") or 0))
        return _Result(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or self.count_tokens(prompt)),
            completion_tokens=int(usage.get("completion_tokens") or estimate_tokens(text)),
        )

    def _calibrate(self, prompt: Prompt, prompt_tokens: int) -> None:
        """Count tokens as the server does: 4 characters a token overran a 2048-token llama-server slot with
        HotPotQA prompts (the chat template's tokens are counted too, so counts err long)."""
        chars = len(prompt_chars(prompt))
        if prompt_tokens and chars >= CALIBRATE_CHARS:
            with self._count:
                self.chars_per_token = min(self.chars_per_token, chars / prompt_tokens)

    def _continuation(self, text: str, prefill: str) -> str:
        """The new text of a reply from a server that echoes the prefilled turn (as its probe showed)."""
        rest = served.strip_echo(text, prefill)
        if rest is None:
            raise _Unexpected(f"LLM server at {self.base_url} echoed the prefilled assistant turn when probed, "
                              f"but this reply does not start with it ({text[:60]!r}): set "
                              f"{self.setting_prefix}__PREFILL=continues if it no longer echoes")
        return rest

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The server's Retry-After when it gave one, else exponential backoff from `backoff_s`."""
        err = state.outcome.exception() if state.outcome else None
        return getattr(err, "retry_after", 0.0) or self.backoff_s * 2 ** (state.attempt_number - 1)

    def _log_retry(self, url: str, attempts: int, state: tenacity.RetryCallState) -> None:
        with self._count:
            self.retried += 1
        reason = state.outcome.exception() if state.outcome else "?"
        log.warning("retrying %s (attempt %d of %d) after: %s", url, state.attempt_number + 1, attempts, reason)


def _about_grammar(reason: str) -> bool:
    """Whether a refusal names the grammar fields (an unknown field, or a grammar the server cannot parse)."""
    return any(word in reason.lower() for word in ("grammar", "structured_output"))


def _retry_after(resp: httpx.Response) -> float:
    try:
        return min(float(resp.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _scrub(text: str, key: str | None) -> str:
    """Servers sometimes echo the key they refused; keep it out of errors and logs."""
    return text.replace(key, "***") if key else text
