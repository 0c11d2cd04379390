"""Flows on the real Prefect engine (prefect_test_harness) with scripted models on the toy env."""

from __future__ import annotations

import pytest
import toyenv

from retro.envs import ENVS


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def scripted(monkeypatch, settings):
    """Every model load in the flows returns the scripted toy models."""
    import retro.agent.rollout as rollout_module

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")

    def fake_load(settings, lake, mode, adapter=None):
        models = toyenv.models()
        if mode == "react":
            models.retro, models.retro_version = None, None
        return models

    monkeypatch.setattr(rollout_module, "load_models", fake_load)


def test_rollout_and_label_flows_write_the_lake_once(harness, scripted, lake):
    from flows.label import label_flow
    from flows.rollout import rollout_flow

    first = rollout_flow(env="toy", split="train", mode="reflexion", tasks=3, trials=2)
    assert first["success_by_trial"] == [0.0, 1.0]
    assert first["written"]["trials"] == 6
    assert label_flow() == 3
    # a rerun of both flows is idempotent
    again = rollout_flow(env="toy", split="train", mode="reflexion", tasks=3, trials=2)
    assert again["written"] == {"trials": 0, "steps": 0, "reflections": 0}
    assert label_flow() == 0
    runs = lake.read("SELECT run_id, flow_run_id FROM lake.runs")
    assert runs.height == 1
    assert runs["flow_run_id"][0]  # the Prefect flow-run id joins the lake to Prefect
    assert lake.read("SELECT count(*) FROM lake.ratings").item() == 3


def test_a_transient_failure_is_retried_a_data_error_is_not():
    from prefect.states import Failed

    from flows.common import retry_transient
    from retro.errors import DataError, LakeBusyError

    def state(exc):
        return Failed(data=exc)

    assert retry_transient(None, None, state(LakeBusyError("busy")))
    assert not retry_transient(None, None, state(DataError("bad file")))


def test_deployments_carry_the_nightly_schedule(settings):
    from flows.serve import deployments

    settings.schedule.nightly_cron = "30 3 * * *"
    built = {d.name: d for d in deployments(settings)}
    assert set(built) == {"nightly", "rollout", "label", "build-datasets", "train", "evaluate"}
    (nightly,) = built["nightly"].schedules
    assert (nightly.schedule.cron, nightly.schedule.timezone) == ("30 3 * * *", settings.schedule.timezone)
    assert all(not d.schedules for name, d in built.items() if name != "nightly")
