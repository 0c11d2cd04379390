"""`retro serve` for real: a local Prefect server, the served deployments, `prefect deployment run`.

The lake is filled by a scripted rollout in this process; the served `label/label` deployment then
rates its reflections in the runner's own subprocess, so the test sees the whole user path: server,
runner, CLI trigger, flow run to Completed, lake effect, and a clean stop on Ctrl-C.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import toyenv

from retro.agent.request import rollout_request
from retro.envs import ENVS
from retro.orchestrate.rollout import rollout

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def deployment_exists(api: str, name: str) -> bool:
    try:
        return httpx.get(f"{api}/deployments/name/{name}", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_served_deployment_runs_when_triggered(settings, lake, monkeypatch, tmp_path):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    rollout(settings, lake, rollout_request(settings, lake, env="toy", split="train", mode="reflexion",
                                            tasks=3, trials=2), models=toyenv.models())
    assert lake.read("SELECT count(*) FROM lake.ratings").item() == 0

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "RETRO_HOME": str(settings.home), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([str(BIN / "retro"), "serve", "--port", str(port)], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: deployment_exists(api, "label/label"), "the served label deployment")
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "label/label", "--param", "version=served",
                              "--watch", "--watch-timeout", "240"],
                             cwd=ROOT, env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True,
                             timeout=300, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout + run.stderr
        ratings = lake.read("SELECT label_version, count(*) FROM lake.ratings GROUP BY ALL").rows()
        assert ratings == [("served", 3)]  # 3 tasks x 1 reflection with a next trial
        flow_runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        states = sorted(r["state_type"] for r in flow_runs)
        assert states[0] == "COMPLETED" and set(states[1:]) == {"SCHEDULED"}  # the nightly cron's next runs
        # retro's own lines reach the served run's log (its process keeps the root logger at WARNING)
        (done,) = [r["id"] for r in flow_runs if r["state_type"] == "COMPLETED"]
        wait_for(lambda: any("label served: rated 3 reflections" in line["message"] for line in httpx.post(
            f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [done]}}}, timeout=10).json()),
            "retro's log line in the served run's log", timeout_s=60)
    finally:
        serve.send_signal(signal.SIGINT)  # what Ctrl-C on `just serve` sends
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            raise
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert "stopped server and runner" in output, output[-2000:]
    assert code == 0, output[-2000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)  # the server went down with it


def flow_run_logs(api: str, flow_run_id: str) -> list[str]:
    return [line["message"] for line in httpx.post(f"{api}/logs/filter", json={
        "logs": {"flow_run_id": {"any_": [flow_run_id]}}}, timeout=10).json()]


def test_served_rollout_shows_its_rounds_in_the_run_log_while_it_runs(retro_home, tmp_path):
    """A served `rollout/rollout` run on the real embedded engine: its per-round progress lines are in the
    run's log, read through Prefect's API, while the flow run is still RUNNING (not only its final summary)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "RETRO_HOME": str(retro_home), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RETRO_ROLLOUT__MAX_STEPS": "2"}
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([str(BIN / "retro"), "serve", "--port", str(port)], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: deployment_exists(api, "rollout/rollout"), "the served rollout deployment")
        started = subprocess.run([str(BIN / "prefect"), "deployment", "run", "rollout/rollout", "--param",
                                  "env=hotpotqa", "--param", "tasks=2", "--param", "trials=4"],
                                 cwd=ROOT, env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True,
                                 timeout=120, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        seen_running: list[str] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            (run,) = [r for r in httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
                      if r["deployment_id"] and r["state_type"] not in ("SCHEDULED",)] or [None]
            if run is None:
                time.sleep(1)
                continue
            lines = flow_run_logs(api, run["id"])
            state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state_type"]
            if state == "RUNNING" and any("success after trial 0" in line for line in lines):
                seen_running = lines
                break
            if state in ("COMPLETED", "FAILED", "CRASHED"):
                break
            time.sleep(1)
        assert seen_running, f"no round's progress in the log while the run ran: {state}, {lines[-5:]}"
        assert any(re.search(r"rollout reflexion hotpotqa/eval: \d+ of at most \d+ episodes, .* tok/s", line)
                   for line in seen_running), seen_running
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()
