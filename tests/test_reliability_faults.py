"""LLM faults and secrets, end to end: rollouts whose models sit behind a real, misbehaving HTTP server.

An OpenAI-compatible server (http.server on 127.0.0.1) answers the toy environment's actor and
retrospective prompts, and misbehaves on chosen tasks: it times out, returns 500s, malformed JSON or an
empty completion. Each failing call is retried; a call still without an answer ends the run with one line
naming the server and the settings (issue 18, finding 4): an outage is never stored as a failed trial.
The trials in flight are not committed, the committed ones stay, and a rerun after the server recovers
finishes the run. An API key a server echoes back never reaches the logs, the lake or the flow parameters.
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

import clirun
import pytest
import toyenv

from retro.agent.request import rollout_request
from retro.agent.spec import Models
from retro.config import ModelSettings, load_settings
from retro.envs import ENVS
from retro.errors import BackendRefusedError, BackendUnreachableError, ConfigError
from retro.llm.openai_compat import OpenAIBackend
from retro.orchestrate.rollout import rollout
from retro.store import KEYS

KEY = "sk-live-4f9a1c0ffee0123456789abcdef"
TIMEOUT_S = 0.3


class ToyServer:
    """Answers like the toy env's scripted models; `faults[k]` makes it misbehave on prompts of task k.

    Faults: "500" (always), "stall" (answers after the client gave up), "malformed" (not JSON),
    "empty" (no text, no tokens), "flaky" (500 the first time a request body is seen), "echo-key"
    (401 quoting the key it was sent), "500-echo-key" (500 quoting it).
    """

    def __init__(self, faults: dict[int, str], only_with: str | None = None):
        self.faults = faults
        self.only_with = only_with  # misbehave only on prompts holding this text (e.g. from trial 1 on)
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
        fault = self.faults.get(k) if self.only_with is None or self.only_with in text else None
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
              "read_timeout_s": TIMEOUT_S, "retries": 1, "concurrency": 8,
              "prefill": "continues"}  # the toy server continues a prefilled turn, as vLLM does
    return OpenAIBackend(ModelSettings(**fields), name=name, backoff_s=0.01)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setenv("TOY_SERVER_API_KEY", KEY)


def run_against(server: ToyServer, settings, lake, tasks: int, trials: int = 2):
    models = Models(backend(server.url, "http-actor"), backend(server.url, "http-retro"), "base")
    return rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion",
                                                   tasks=tasks, trials=trials), models=models)


REASONS = {"500": "HTTP 500", "stall": f"no answer within {TIMEOUT_S:g} s", "malformed": "malformed response",
           "empty": "empty completion"}


@pytest.mark.parametrize("fault", list(REASONS))
def test_an_outage_ends_the_run_and_a_rerun_after_recovery_finishes_it(toy, settings, lake, fault):
    """Trial 0 of every task is answered; from trial 1 on (prompts that hold a reflection) task 2's server
    calls fail. The run stops there: trial 0 stays committed, trial 1 is not, and no trial says llm_error."""
    server = ToyServer({2: fault}, only_with="Reflection 1:")
    try:
        with pytest.raises(BackendUnreachableError) as stopped:
            run_against(server, settings, lake, tasks=4)
        message = str(stopped.value)
        assert "\n" not in message and f"LLM server at {server.url} gave no answer in 2 attempts" in message
        assert REASONS[fault] in message and "__READ_TIMEOUT_S" in message and "__RETRIES" in message
        committed = lake.read("SELECT run_id, trial, count(*) AS n FROM lake.trials GROUP BY ALL")
        assert committed.select("trial", "n").rows() == [(0, 4)]  # trial 0 stays, the trials in flight do not
        run_id = committed["run_id"][0]
        assert lake.read("SELECT count(*) FROM lake.run_ends WHERE run_id = ?", [run_id]).item() == 0
        server.faults = {}  # the server recovers
        result = run_against(server, settings, lake, tasks=4)
    finally:
        server.close()
    assert result.run_id == run_id and result.success_by_trial == [0.0, 1.0]  # the toy env's perfect reflections
    trials = lake.read("SELECT trial, stop_reason, error FROM lake.trials ORDER BY task_id, trial")
    assert trials.height == 8 and "llm_error" not in trials["stop_reason"].to_list()
    assert trials["error"].is_null().all()
    ended = lake.read("SELECT status FROM lake.run_ends WHERE run_id = ?", [run_id])
    assert ended["status"].to_list() == ["completed"]


def test_a_flaky_server_is_retried_and_the_run_never_notices(toy, settings, lake, caplog):
    server = ToyServer({1: "flaky", 3: "flaky"})
    models = Models(backend(server.url, "http-actor"), backend(server.url, "http-retro"), "base")
    try:
        with caplog.at_level(logging.WARNING, logger="retro.llm.openai_compat"):
            result = rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval",
                                                             mode="reflexion", tasks=4,
                                                             trials=2), models=models)
    finally:
        server.close()
    assert result.success_by_trial == [0.0, 1.0]
    assert models.actor.retried + models.retro.retried == len([r for r in caplog.records if "retrying" in r.message])
    assert models.actor.retried > 0
    assert lake.read("SELECT count(*) FROM lake.trials WHERE error IS NOT NULL").item() == 0


def test_rollout_command_stops_on_an_outage_with_one_line(toy, retro_home, monkeypatch):
    """`retro rollout` at a server answering 500: exit 1, one line naming the server and the setting."""
    server = ToyServer({k: "500" for k in range(12)})
    for role in ("ACTOR", "RETROSPECTIVE"):
        for name, value in {"BACKEND": "openai", "MODEL": "toy", "BASE_URL": server.url, "RETRIES": "1",
                            "READ_TIMEOUT_S": "2", "API_KEY_ENV": "TOY_SERVER_API_KEY", "PREFILL": "continues"}.items():
            monkeypatch.setenv(f"RETRO_{role}__{name}", value)
    try:
        line = clirun.retro("rollout", "--env", "toy", "--tasks", "2", "--trials", "2").one_line_error
    finally:
        server.close()
    assert f"LLM server at {server.url} gave no answer in 2 attempts (HTTP 500)" in line
    assert "RETRO_ACTOR__RETRIES" in line
    assert clirun.retro("sql", "SELECT count(*) AS n FROM lake.trials", "--format", "csv").out.split() == ["n", "0"]


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
        with pytest.raises(BackendRefusedError) as refused:  # a 401 outranks the 500 of the same batch
            run_against(server, settings, lake, tasks=3)
    finally:
        server.close()
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}  # the key was sent...
    assert "invalid api key ***" in str(refused.value) and KEY not in str(refused.value)  # ...echoed, and scrubbed
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
    """The rollout flow on the real Prefect engine, against a server that refuses the key and echoes it (the
    run fails on it): Prefect stores the flow's parameters and its run logs, the failure too; none holds the key."""
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.rollout import rollout_flow

    monkeypatch.setenv("TOY_SERVER_API_KEY", KEY)
    server = ToyServer({1: "echo-key"})
    model = {"backend": "openai", "model": "toy", "base_url": server.url, "api_key_env": "TOY_SERVER_API_KEY",
             "read_timeout_s": 5, "retries": 0, "prefill": "continues"}  # as vLLM does; no probe to refuse
    overrides = {"preset": "tiny", "actor": model, "retrospective": model}
    try:
        with prefect_test_harness(server_startup_timeout=180):
            with pytest.raises(BackendRefusedError):
                rollout_flow(env="toy", split="eval", mode="reflexion", tasks=3, trials=2, overrides=overrides)
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs()
                logs = client.read_logs()
    finally:
        server.close()
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}
    stored = json.dumps([r.parameters for r in runs]) + "\n".join(log.message for log in logs)
    assert "TOY_SERVER_API_KEY" in stored  # the parameters name the variable...
    assert KEY not in stored  # ...never its value
    assert not [log for log in logs if "Retry" in log.message]  # a refused key is not retried
    assert KEY not in lake.read("SELECT coalesce(string_agg(error, ' '), '') FROM lake.trials").item()
