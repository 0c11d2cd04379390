"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 (tests/fakeserver.py)."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from fakeserver import FakeServer

from retro.config import ModelSettings, load_settings
from retro.errors import BackendUnreachableError, ConfigError
from retro.llm import make_llm
from retro.llm.base import GenParams
from retro.llm.openai_compat import OpenAIBackend

KEY = "sk-test-0123456789secret"


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def backend(url: str, **overrides) -> OpenAIBackend:
    fields = {"backend": "openai", "model": "tiny", "base_url": url, "api_key_env": "RETRO_TEST_API_KEY",
              "read_timeout_s": 2.0, "retries": 3, "concurrency": 4, "prefill": "continues"}  # probes: test_llm_served
    return OpenAIBackend(ModelSettings(**(fields | overrides)), backoff_s=0.01)


def test_completion_and_chat_round_trip(server):
    chat = [{"role": "user", "content": "hi"}]
    prefilled = [*chat, {"role": "assistant", "content": "Thought 1:"}]
    gen = backend(server.url).generate(["plain", chat, prefilled], GenParams(max_new_tokens=7, stop=("\n",)))
    assert gen.texts == ["echo:plain", "chat:hi", "chat:Thought 1:"]
    assert gen.prompt_tokens == [11, 11, 11] and gen.completion_tokens == [5, 5, 5]
    assert gen.errors == [None, None, None]
    by_path = sorted((r["path"], r["body"]) for r in server.requests if "messages" not in r["body"])
    assert by_path[0][0] == "/v1/completions" and by_path[0][1]["max_tokens"] == 7
    chats = [r["body"] for r in server.requests if "messages" in r["body"]]
    assert {r.get("continue_final_message") for r in chats} == {None, True}
    assert all(r["model"] == "tiny" and r["stop"] == ["\n"] for r in chats)


def test_stop_strings_are_applied_locally_too(server):
    server.script = [(200, json.dumps({"choices": [{"text": "Paris\nObservation: x"}]}))]
    gen = backend(server.url).generate(["q"], GenParams(stop=("Observation:",)))
    assert gen.texts == ["Paris\n"]
    assert gen.completion_tokens == [2] and gen.prompt_tokens == [1]  # no usage: estimated


def test_flaky_server_is_retried_until_it_answers(server, caplog):
    server.script = [(500, "{}"), (429, "{}"), (503, "{}")]
    llm = backend(server.url)
    with caplog.at_level(logging.WARNING, logger="retro.llm.openai_compat"):
        gen = llm.generate(["a"], GenParams())
    assert gen.texts == ["echo:a"] and gen.errors == [None]
    assert len(server.requests) == 4
    assert llm.retried == 3  # counted, for a run's summary
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().rsplit(": ", 1)[-1] for r in retries] == ["HTTP 500", "HTTP 429", "HTTP 503"]
    assert all(f"{server.url}/completions" in r.getMessage() for r in retries)


def test_retry_after_is_honoured(server):
    server.script = [(429, "{}")]
    llm = backend(server.url)
    llm.backoff_s = 5.0  # would be the wait without the header
    start = time.perf_counter()
    server.headers = {"Retry-After": "0.2"}
    assert llm.generate(["a"], GenParams()).texts == ["echo:a"]
    assert 0.2 <= time.perf_counter() - start < 4


def test_timeouts_are_settings_with_sane_defaults():
    defaults = ModelSettings()
    assert defaults.connect_timeout_s == 5.0 and defaults.read_timeout_s == 300.0 and defaults.retries == 3
    with pytest.raises(ValueError):
        ModelSettings(read_timeout_s=0)


def test_no_answer_after_the_retry_budget_is_one_line_naming_server_and_settings(server):
    server.script = [(500, "{}")] * 4
    gen = backend(server.url).generate(["a"], GenParams())
    error = gen.errors[0]
    assert gen.texts == [""] and "\n" not in error
    assert f"LLM server at {server.url} gave no answer in 4 attempts (HTTP 500)" in error
    assert "RETRO_ACTOR__READ_TIMEOUT_S" in error and "RETRO_ACTOR__RETRIES" in error


def test_slow_answer_times_out_and_is_retried(server):
    server.delays = [1.0]
    gen = backend(server.url, read_timeout_s=0.2).generate(["a"], GenParams())
    assert gen.texts == ["echo:a"] and len(server.requests) == 2


def test_concurrency_is_capped(server):
    server.delays = [0.05] * 8
    gen = backend(server.url, concurrency=2).generate([str(i) for i in range(8)], GenParams())
    assert gen.texts == [f"echo:{i}" for i in range(8)]  # in prompt order
    assert server.max_in_flight <= 2


def test_malformed_json_is_retried_then_recorded(server):
    server.script = [(200, "not json")] * 2 + [(200, json.dumps({"choices": []}))] * 2
    gen = backend(server.url).generate(["a"], GenParams())
    assert gen.texts == [""]
    assert "malformed response" in gen.errors[0] and "4 attempts" in gen.errors[0]
    assert backend(server.url).generate(["b"], GenParams()).texts == ["echo:b"]  # the server is fine again


def test_one_failed_prompt_does_not_sink_the_batch(server):
    server.script = [(400, json.dumps({"error": "bad request"}))]  # not retried: our request is wrong
    gen = backend(server.url, concurrency=1).generate(["a", "b"], GenParams())
    assert gen.texts == ["", "echo:b"]
    assert "refused the request (HTTP 400: " in gen.errors[0] and "RETRO_ACTOR__MODEL" in gen.errors[0]
    assert gen.errors[1] is None
    assert len(server.requests) == 2


def test_closed_port_fails_fast_naming_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.perf_counter()
    with pytest.raises(BackendUnreachableError, match=f"LLM server at {url} is unreachable") as err:
        backend(url).generate(["a", "b"], GenParams())
    assert time.perf_counter() - start < 5
    assert "RETRO_ACTOR__BASE_URL" in str(err.value) and "\n" not in str(err.value)


def test_api_key_is_sent_but_never_shown(server, monkeypatch, caplog):
    monkeypatch.setenv("RETRO_TEST_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    server.script = [(401, json.dumps({"error": f"key {KEY} refused"}))]  # a server echoing the key
    llm = backend(server.url)
    gen = llm.generate(["a", "b"], GenParams())
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert sorted(gen.texts) == ["", "echo:b"] or sorted(gen.texts) == ["", "echo:a"]
    failed = next(e for e in gen.errors if e)
    assert "***" in failed and KEY not in failed
    assert KEY not in caplog.text and KEY not in repr(llm) and KEY not in str(vars(llm))


def test_no_key_no_header(server, monkeypatch):
    monkeypatch.delenv("RETRO_TEST_API_KEY", raising=False)
    backend(server.url).generate(["a"], GenParams())
    assert "Authorization" not in server.requests[0]["headers"]


def test_make_llm_dispatch(server, retro_home):
    settings = load_settings(actor={"backend": "openai", "model": "m", "base_url": server.url})
    llm = make_llm(settings.actor, settings, name="actor-x")
    assert isinstance(llm, OpenAIBackend) and llm.name == "actor-x"
    assert llm.generate(["a"], GenParams()).texts == ["echo:a"]
    assert llm.count_tokens("abcdefgh") == 2
    with pytest.raises(ConfigError, match="RETRO_ACTOR__BACKEND=openai"):
        make_llm(settings.actor, settings, adapter_path="/some/adapter")
    scripted = load_settings(retrospective={"backend": "scripted"})
    with pytest.raises(ConfigError, match="RETRO_RETROSPECTIVE__BACKEND=scripted"):
        make_llm(scripted.retrospective, scripted)
