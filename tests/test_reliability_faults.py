"""LLM faults and secrets, end to end: rollouts whose models sit behind a real, misbehaving HTTP server.

An OpenAI-compatible server (http.server on 127.0.0.1) answers the toy environment's actor and
retrospective prompts, and misbehaves on chosen tasks: it times out, returns 500s, malformed JSON or an
empty completion. Each failing call is retried, then its episode ends as failed with the reason, and the
run goes on. An API key a server echoes back never reaches the logs, the lake or the flow parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import toyenv

from retro.agent.rollout import Models, rollout
from retro.config import ModelSettings, load_settings
from retro.envs import ENVS
from retro.errors import ConfigError
from retro.llm.openai_compat import OpenAIBackend
from retro.store import KEYS

KEY = "sk-live-4f9a1c0ffee0123456789abcdef"
TIMEOUT_S = 0.3


class ToyServer:
    """Answers like the toy env's scripted models; `faults[k]` makes it misbehave on prompts of task k.

    Faults: "500" (always), "stall" (answers after the client gave up), "malformed" (not JSON),
    "empty" (no text, no tokens), "flaky" (500 the first time a request body is seen), "echo-key"
    (401 quoting the key it was sent), "500-echo-key" (500 quoting it).
    """

    def __init__(self, faults: dict[int, str]):
        self.faults = faults
        self.requests: list[dict] = []
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                status, payload, delay = server.reply(body, raw, self.headers.get("Authorization", ""))
                time.sleep(delay)
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and hung up
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def reply(self, body: dict, raw: bytes, auth: str) -> tuple[int, str, float]:
        text = "\n".join(m["content"] for m in body["messages"])
        k = int(re.search(r"code (\d+)", text).group(1))
        fault = self.faults.get(k)
        with self.lock:
            self.requests.append({"task": k, "auth": auth})
            digest = hashlib.sha256(raw).hexdigest()
            first_time = digest not in self.seen
            self.seen.add(digest)
        sent_key = auth.removeprefix("Bearer ")
        if fault == "500":
            return 500, '{"error": "internal"}', 0.0
        if fault == "stall":
            return 200, self.completion(body, text), 3 * TIMEOUT_S
        if fault == "malformed":
            return 200, '{"choices": [{"message": ', 0.0
        if fault == "empty":
            return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": ""}}]}), 0.0
        if fault == "flaky" and first_time:
            return 503, "{}", 0.0
        if fault == "echo-key":
            return 401, json.dumps({"error": f"invalid api key {sent_key}"}), 0.0
        if fault == "500-echo-key":
            return 500, json.dumps({"error": f"overloaded, key {sent_key}"}), 0.0
        return 200, self.completion(body, text), 0.0

    @staticmethod
    def completion(body: dict, text: str) -> str:
        prefilled = body["messages"][-1]["role"] == "assistant"
        answer = toyenv.actor_policy(text) if prefilled else toyenv.retro_policy(text)
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": max(1, len(answer.split()))}
        return json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}], "usage": usage})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def backend(url: str, name: str) -> OpenAIBackend:
    fields = {"backend": "openai", "model": "toy", "base_url": url, "api_key_env": "TOY_SERVER_API_KEY",
              "timeout_s": TIMEOUT_S, "retries": 1, "concurrency": 8}
    return OpenAIBackend(ModelSettings(**fields), name=name, backoff_s=0.01)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setenv("TOY_SERVER_API_KEY", KEY)


def run_against(server: ToyServer, settings, lake, tasks: int, trials: int = 2):
    models = Models(backend(server.url, "http-actor"), backend(server.url, "http-retro"), "base")
    return rollout(settings, lake, env="toy", split="eval", mode="reflexion", tasks=tasks, trials=trials,
                   models=models)


def test_faulty_server_fails_episodes_with_the_reason_and_the_run_goes_on(toy, settings, lake):
    faults = {1: "500", 2: "stall", 3: "malformed", 4: "empty", 5: "flaky"}
    server = ToyServer(faults)
    try:
        result = run_against(server, settings, lake, tasks=6)
    finally:
        server.close()
    trials = lake.read("SELECT task_id, trial, success, stop_reason, error FROM lake.trials ORDER BY task_id, trial")
    by_task = {k: trials.filter(pl.col("task_id") == f"eval-{k:02d}") for k in range(6)}
    reasons = {1: "HTTP 500", 2: f"no answer within {TIMEOUT_S:g} s", 3: "malformed response", 4: "empty completion"}
    for k, reason in reasons.items():
        rows = by_task[k].to_dicts()
        assert [r["trial"] for r in rows] == [0, 1], rows  # every trial tried, each failed
        assert all(r["stop_reason"] == "llm_error" and not r["success"] for r in rows), rows
        assert all(reason in r["error"] and "2 attempts" in r["error"] for r in rows), rows
        # per trial one actor call, and one reflection call in between: each tried twice (retries=1)
        assert sum(r["task"] == k for r in server.requests) == 3 * 2, faults[k]
    for k in (0, 5):  # healthy, and flaky-then-fine: solved at trial 1 as the toy env intends
        assert by_task[k]["success"].to_list() == [False, True]
        assert by_task[k]["error"].is_null().all()
    assert result.success_by_trial == [0.0, 2 / 6]
    ended = lake.read("SELECT status FROM lake.run_ends WHERE run_id = ?", [result.run_id])
    assert ended["status"].to_list() == ["completed"]
    # no reflection for the tasks whose retrospective call failed too; a reflection for each healthy one
    assert sorted(lake.read("SELECT task_id FROM lake.reflections")["task_id"]) == ["eval-00", "eval-05"]


def _everything_stored(home: Path, lake) -> str:
    """Every cell of every lake table as text, and the bytes of every file under RETRO_HOME."""
    with lake.connect() as con:
        tables = [con.execute(f"SELECT * FROM lake.{name}").pl().write_csv() for name in KEYS]
    files = [p.read_bytes().decode("latin-1") for p in home.rglob("*") if p.is_file()]
    return "\n".join(tables + files)


def test_api_key_never_reaches_logs_lake_or_settings(toy, settings, lake, retro_home, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # also under the default variable name
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    server = ToyServer({1: "echo-key", 2: "500-echo-key"})
    try:
        run_against(server, settings, lake, tasks=3)
    finally:
        server.close()
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}  # the key was sent...
    errors = lake.read("SELECT task_id, error FROM lake.trials WHERE error IS NOT NULL ORDER BY ALL")
    assert errors.height >= 2 and any("***" in e for e in errors["error"])  # ...echoed, and scrubbed
    assert KEY not in caplog.text
    assert KEY not in _everything_stored(retro_home, lake)
    # what the lake's `runs.config` and the flows receive: the variable's name, never its value
    assert KEY not in settings.config_json() and "OPENAI_API_KEY" in settings.config_json()
    with pytest.raises(ConfigError) as refused:  # a key cannot be passed as a setting (or a flow override)
        load_settings(actor={"api_key": KEY})
    assert KEY not in str(refused.value)


def test_flow_parameters_cannot_carry_a_key():
    """Flow runs store their parameters in Prefect: none of them is a secret or a free-form settings dump."""
    from flows.evaluate import evaluate_flow
    from flows.label import label_flow
    from flows.nightly import nightly_flow
    from flows.rollout import rollout_flow
    from flows.train import build_datasets_flow, train_flow

    for flow in (rollout_flow, label_flow, build_datasets_flow, train_flow, evaluate_flow, nightly_flow):
        names = set(flow.parameters.properties)
        assert not {n for n in names if re.search(r"key|secret|token|password", n, re.IGNORECASE)}, names


@pytest.mark.slow
def test_api_key_stays_out_of_prefect_parameters_and_logs(toy, lake, monkeypatch):
    """The rollout flow on the real Prefect engine, against a server that echoes the key: Prefect stores
    the flow's parameters and its run logs; neither holds the key."""
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.rollout import rollout_flow

    monkeypatch.setenv("TOY_SERVER_API_KEY", KEY)
    server = ToyServer({1: "echo-key"})
    model = {"backend": "openai", "model": "toy", "base_url": server.url, "api_key_env": "TOY_SERVER_API_KEY",
             "timeout_s": 5, "retries": 0}
    overrides = {"preset": "tiny", "actor": model, "retrospective": model}
    try:
        with prefect_test_harness(server_startup_timeout=180):
            result = rollout_flow(env="toy", split="eval", mode="reflexion", tasks=3, trials=2, overrides=overrides)
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs()
                logs = client.read_logs()
    finally:
        server.close()
    assert result["written"]["trials"] > 0
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}
    stored = json.dumps([r.parameters for r in runs]) + "\n".join(log.message for log in logs)
    assert "TOY_SERVER_API_KEY" in stored  # the parameters name the variable...
    assert KEY not in stored  # ...never its value
    assert KEY not in lake.read("SELECT string_agg(coalesce(error, ''), ' ') FROM lake.trials").item()
