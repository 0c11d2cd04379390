"""Any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenAI) behind the batched LLM interface.

One HTTP request per prompt, `concurrency` in flight. Transient failures (429, 5xx, connection errors,
timeouts, malformed JSON, empty choices, an empty completion with no tokens) are retried with exponential backoff; a prompt that still
fails comes back as "" with its reason in `Generation.errors`, so one bad request never sinks a batch.
Only a server that refuses every connection is an error: nothing useful can come of the batch.
The API key is read from the environment at call time and never stored, logged or repeated in errors.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from retro.config import ModelSettings
from retro.errors import BackendUnreachableError
from retro.llm.base import Generation, GenParams, Prompt, cut_at_stop

log = logging.getLogger(__name__)

MAX_STOPS = 4  # OpenAI accepts at most 4 stop strings; the rest are applied locally by cut_at_stop
MAX_RETRY_AFTER_S = 30.0  # a server's Retry-After is honoured up to this


def estimate_tokens(text: str) -> int:
    """About 4 characters per token for English BPE vocabularies: enough for budgets and accounting."""
    return (len(text) + 3) // 4


def prompt_chars(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def request_body(model: str, prompt: Prompt, params: GenParams, seed: int) -> tuple[str, dict[str, Any]]:
    """(endpoint, JSON body) for one prompt: raw text -> /completions, chat -> /chat/completions."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": seed,
    }
    if params.stop:
        body["stop"] = list(params.stop[:MAX_STOPS])
    if isinstance(prompt, str):
        return "/completions", body | {"prompt": prompt}
    body["messages"] = prompt
    if prompt and prompt[-1]["role"] == "assistant":  # continue the prefilled answer (vLLM's extension)
        body |= {"continue_final_message": True, "add_generation_prompt": False}
    return "/chat/completions", body


def parse_text(data: Any, chat: bool) -> str:
    """The completion text of a response; KeyError/IndexError/TypeError on a malformed one."""
    choice = data["choices"][0]
    text = choice["message"]["content"] if chat else choice["text"]
    if not isinstance(text, str):
        raise TypeError("completion text is not a string")
    return text


@dataclass
class _Result:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    unreachable: bool = False  # the last attempt could not connect at all


class OpenAIBackend:
    """Batched generation against an OpenAI-compatible HTTP server, with retries and a concurrency cap."""

    def __init__(
        self,
        settings: ModelSettings,
        name: str | None = None,
        setting_prefix: str = "RETRO_ACTOR",  # names the variable to fix in the unreachable error
        backoff_s: float = 1.0,  # first retry delay; doubles per attempt
    ):
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.model = settings.model
        self.name = name or settings.model
        self.context_window = settings.context_window
        self.setting_prefix = setting_prefix
        self.backoff_s = backoff_s

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r})"

    def count_tokens(self, prompt: Prompt) -> int:
        return estimate_tokens(prompt_chars(prompt))

    def generate(self, prompts: list[Prompt], params: GenParams) -> Generation:
        start = time.perf_counter()
        key = os.environ.get(self.settings.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(self.settings.timeout_s, connect=min(self.settings.timeout_s, 10.0))
        with httpx.Client(timeout=timeout, headers=headers) as client:
            workers = max(1, min(self.settings.concurrency, len(prompts)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [
                    pool.submit(self._one, client, prompt, params, params.seed + i, key)  # a seed per prompt
                    for i, prompt in enumerate(prompts)
                ]
                results = [f.result() for f in futures]
        if results and all(r.unreachable for r in results):
            raise BackendUnreachableError(
                f"LLM server at {self.base_url} is unreachable ({results[0].error}): "
                f"start it or fix {self.setting_prefix}__BASE_URL"
            )
        failed = sum(r.error is not None for r in results)
        if failed:
            first = next(r.error for r in results if r.error)
            log.warning("%d of %d prompts to %s failed: %s", failed, len(results), self.base_url, first)
        return Generation(
            texts=[r.text for r in results],
            prompt_tokens=[r.prompt_tokens for r in results],
            completion_tokens=[r.completion_tokens for r in results],
            seconds=time.perf_counter() - start,
            errors=[r.error for r in results],
        )

    def _one(
        self, client: httpx.Client, prompt: Prompt, params: GenParams, seed: int, key: str | None
    ) -> _Result:
        """One prompt with retries; never raises for HTTP trouble, the reason goes into the result."""
        path, body = request_body(self.model, prompt, params, seed)
        url = self.base_url + path
        reason, unreachable, wait = "no attempt made", False, 0.0
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(wait or self.backoff_s * 2 ** (attempt - 1))
                log.debug("retry %d of %s after: %s", attempt, url, reason)
            wait, unreachable = 0.0, False
            try:
                resp = client.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                reason, unreachable = f"cannot connect: {_scrub(str(err), key)}", True
                continue
            except httpx.TimeoutException:
                reason = f"no answer within {self.settings.timeout_s:g} s"
                continue
            except httpx.TransportError as err:
                reason = f"{type(err).__name__}: {_scrub(str(err), key)}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                reason, wait = f"HTTP {resp.status_code}", _retry_after(resp)
                continue
            if resp.status_code >= 400:  # our request is wrong (bad model name, key): retrying will not help
                return _Result(error=f"HTTP {resp.status_code}: {_scrub(resp.text, key)[:300]}")
            try:
                data = resp.json()
                text = parse_text(data, chat=not isinstance(prompt, str))
            except (ValueError, KeyError, IndexError, TypeError) as err:
                reason = f"malformed response ({type(err).__name__}: {_scrub(str(err), key)[:100]})"
                continue
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            if not text and not usage.get("completion_tokens"):
                # Nothing generated at all: a faulty server. (A model that stops at once still reports
                # its stop or end token, and that empty answer is kept.)
                reason = "empty completion"
                continue
            text = cut_at_stop(text, params.stop)
            return _Result(
                text=text,
                prompt_tokens=int(usage.get("prompt_tokens") or self.count_tokens(prompt)),
                completion_tokens=int(usage.get("completion_tokens") or estimate_tokens(text)),
            )
        return _Result(error=f"{reason}, {self.settings.retries + 1} attempts", unreachable=unreachable)


def _retry_after(resp: httpx.Response) -> float:
    try:
        return min(float(resp.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


def _scrub(text: str, key: str | None) -> str:
    """Servers sometimes echo the key they refused; keep it out of errors and logs."""
    return text.replace(key, "***") if key else text
