"""Served models as real servers answer (tests/fakeserver.py): a prefilled turn continued (vLLM), echoed
(llama-server) or not continued at all; trained adapters served by name (vLLM) or by id (llama-server), in
retroformer mode end to end; and the guard that stops a served actor whose actions are all invalid."""

from __future__ import annotations

import json

import pytest
import toyenv
from clirun import retro
from fakeserver import FakeServer, served

from retro.agent.actor import Step
from retro.agent.guard import ActionGuard, InvalidActionsError
from retro.agent.request import rollout_request
from retro.config import ModelSettings, load_settings
from retro.envs import ENVS
from retro.errors import BackendRefusedError, ConfigError
from retro.llm import make_llm
from retro.llm.base import GenParams
from retro.llm.openai_compat import OpenAIBackend
from retro.llm.served import PROBE
from retro.orchestrate.rollout import rollout
from retro.store import Lake
from retro.store.registry import ModelVersion, register_model_version

ADAPTER = "ppo-served01"
KINDS = {"vllm": "continues", "llama": "echoes"}


def toy_model(text: str, adapter: str | None) -> str:
    """The toy env's scripted actor and retrospective model; reflections help only through the adapter."""
    if text.endswith(PROBE[-1]["content"]):
        return "0, 11, 12"
    if "Previous attempt:" in text:
        return toyenv.retro_policy(text) if adapter == ADAPTER else "I am not sure what went wrong.\n"
    return toyenv.actor_policy(text)


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(kind: str, adapters: tuple[str, ...] = ()) -> FakeServer:
        made.append(served(kind, toy_model, adapters=adapters))
        return made[-1]

    yield make
    for server in made:
        server.close()


def backend(url: str, **overrides) -> OpenAIBackend:
    fields = {"backend": "openai", "model": "tiny", "base_url": url, "retries": 1, "read_timeout_s": 5.0}
    return OpenAIBackend(ModelSettings(**(fields | overrides)), backoff_s=0.01)


def step_prompt(steps: str, tail: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Say the secret word for code 3."},
            {"role": "assistant", "content": steps + tail}]


def probes(server: FakeServer) -> int:
    return sum(r["body"]["messages"][-1]["content"] == PROBE[-1]["content"] for r in server.requests
               if "messages" in r["body"])


# -- a prefilled turn -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_prefilled_turn_is_continued_whether_the_server_echoes_it_or_not(servers, kind):
    server = servers(kind)
    llm = backend(server.url)
    earlier = "Thought 1: I should look.\nAction 1: Look[]\nObservation 1: You see nothing useful.\n"
    prompts = [step_prompt("", "Thought 1:"), step_prompt(earlier, "Thought 2:"), step_prompt(earlier, "Action 2:")]
    gen = llm.generate(prompts, GenParams(stop=("\n",)))
    # the continuation only: not cut inside the echoed trajectory, which has newlines of its own
    assert gen.texts == [" I should answer.", " I should answer.", " Finish[nothing]"]
    assert gen.errors == [None, None, None] and gen.completion_tokens == [3, 3, 1]  # the server's usage
    assert llm.prefill == KINDS[kind]
    llm.generate(prompts, GenParams(stop=("\n",)))
    assert probes(server) == 1  # asked once per server, then remembered
    sent = [r["body"] for r in server.requests if r["body"]["messages"][-1]["content"].endswith("Thought 1:")]
    assert sent[0]["continue_final_message"] is True and sent[0]["add_generation_prompt"] is False
    assert sent[0]["stop"] == ["\n"]


def test_server_that_cannot_continue_a_turn_is_one_line_at_the_first_call(servers):
    server = servers("fresh")
    with pytest.raises(ConfigError) as err:
        backend(server.url).generate([step_prompt("", "Thought 1:")], GenParams(stop=("\n",)))
    line = str(err.value)
    assert "\n" not in line and f"LLM server at {server.url} does not continue a prefilled assistant turn" in line
    assert "it answered 'Sure! Here is my answer" in line and "RETRO_ACTOR__PREFILL" in line
    assert len(server.requests) == 1  # the probe only: no step of a run was sent


def test_server_that_refuses_a_continued_turn_is_one_line(servers):
    server = servers("vllm")
    server.script = [(400, json.dumps({"error": "continue_final_message is not supported"}))]
    with pytest.raises(ConfigError, match="does not continue a prefilled assistant turn .it refused one: HTTP 400"):
        backend(server.url).generate([step_prompt("", "Thought 1:")], GenParams())


def test_probe_refused_for_the_key_blames_the_key_not_the_prefill(servers):
    server = servers("vllm")
    server.script = [(401, json.dumps({"error": "invalid api key"}))]
    with pytest.raises(BackendRefusedError) as err:  # no retry helps; the prefill setting would not either
        backend(server.url).generate([step_prompt("", "Thought 1:")], GenParams())
    assert "HTTP 401" in str(err.value) and "RETRO_ACTOR__MODEL" in str(err.value) and "PREFILL" not in str(err.value)


def test_prefill_setting_skips_the_probe_and_raw_prompts_need_none(servers):
    server = servers("llama")
    llm = backend(server.url, prefill="echoes")
    assert llm.generate([step_prompt("", "Thought 1:"), "plain"], GenParams(stop=("\n",))).texts[0] == " I should answer."
    assert probes(server) == 0
    raw = backend(server.url)
    raw.generate(["Thought 1:"], GenParams())
    assert raw.prefill is None and probes(server) == 0  # no prefilled chat, no question


def test_an_echoing_server_that_stops_echoing_is_an_error_not_a_guess(servers):
    server = servers("llama")
    llm = backend(server.url, prefill="echoes")
    server.script = [(200, json.dumps({"choices": [{"message": {"content": " Finish[word3]"}}]}))]
    gen = llm.generate([step_prompt("", "Action 1:")], GenParams())
    assert gen.texts == [""] and "this reply does not start with it" in gen.errors[0]
    assert "RETRO_ACTOR__PREFILL=continues" in gen.errors[0]


def test_token_counts_follow_the_servers_usage():
    def answer(path: str, body: dict) -> str:  # a tokenizer of 3 characters a token
        return json.dumps({"choices": [{"text": "x"}], "usage": {"prompt_tokens": len(body["prompt"]) // 3,
                                                                  "completion_tokens": 1}})

    server = FakeServer(answer)
    try:
        llm, long = backend(server.url), "word " * 600
        assert llm.count_tokens(long) == 750  # 4 characters a token until the server says otherwise
        llm.generate(["short", long], GenParams())
        assert llm.count_tokens(long) == 1000  # the long prompt calibrated it; the short one is mostly template
    finally:
        server.close()


def test_a_prompt_over_the_servers_context_names_the_context_settings(servers):
    server = servers("vllm")
    server.script = [(400, json.dumps({"error": {"message": "request (2050 tokens) exceeds the available context "
                                                            "size (2048 tokens), try increasing it"}}))]
    error = backend(server.url).generate(["a"], GenParams()).errors[0]
    assert "exceeds the available context size" in error and "llama-server: -c / -np" in error
    assert "lower RETRO_ACTOR__CONTEXT_WINDOW" in error and "API key" not in error


# -- adapters ---------------------------------------------------------------------------------------------------
def served_settings(url: str, server: str, **retro) -> ModelSettings:
    return ModelSettings(backend="openai", model="tiny", base_url=url, adapter_server=server, retries=1, **retro)


def test_vllm_serves_an_adapter_by_name_or_loads_it(servers, tmp_path):
    path = str(tmp_path / ADAPTER)
    listed = servers("vllm", adapters=(ADAPTER,))
    llm = OpenAIBackend(served_settings(listed.url, "vllm"), adapter_path=path)
    assert llm.name == f"tiny+{ADAPTER}" and llm.served_adapter.server == "vllm"
    llm.generate([[{"role": "user", "content": "Previous attempt: code 3"}]], GenParams())
    assert listed.requests[-1]["body"]["model"] == ADAPTER
    bare = servers("vllm")
    with pytest.raises(ConfigError, match=f"does not serve adapter {ADAPTER}: start it with --enable-lora "
                                          f"--lora-modules {ADAPTER}={path}, or set RETRO_ACTOR__ADAPTER_LOAD=true"):
        OpenAIBackend(served_settings(bare.url, "vllm"), adapter_path=path)
    loaded = OpenAIBackend(served_settings(bare.url, "vllm", adapter_load=True), adapter_path=path)
    assert loaded.served_adapter.name == ADAPTER


def test_llama_server_applies_an_adapter_by_its_id(servers, tmp_path):
    server = servers("llama", adapters=("ppo-other", ADAPTER))
    llm = OpenAIBackend(served_settings(server.url, "llama-server"), adapter_path=str(tmp_path / ADAPTER))
    assert llm.served_adapter.lora_id == 1
    llm.generate([[{"role": "user", "content": "Previous attempt: code 3"}]], GenParams())
    assert server.requests[-1]["body"]["lora"] == [{"id": 1, "scale": 1.0}]
    without = servers("llama", adapters=("ppo-other",))
    with pytest.raises(ConfigError, match=f"has no adapter {ADAPTER}.gguf .it has: ppo-other.gguf.: run `retro models "
                                          f"export --gguf {ADAPTER}`"):
        OpenAIBackend(served_settings(without.url, "llama-server"), adapter_path=str(tmp_path / ADAPTER))


def test_make_llm_serves_an_adapter_only_when_the_settings_say_how(servers, retro_home):
    server = servers("vllm", adapters=(ADAPTER,))
    settings = load_settings(retrospective={"backend": "openai", "model": "tiny", "base_url": server.url})
    with pytest.raises(ConfigError, match="RETRO_RETROSPECTIVE__ADAPTER_SERVER=vllm or llama-server"):
        make_llm(settings.retrospective, settings, adapter_path=f"/adapters/{ADAPTER}")
    settings.retrospective.adapter_server = "vllm"
    llm = make_llm(settings.retrospective, settings, adapter_path=f"/adapters/{ADAPTER}")
    assert llm.served_adapter.name == ADAPTER


@pytest.fixture
def toy_env(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")


def register_adapter(settings) -> None:
    folder = settings.models_dir / "adapters" / ADAPTER
    register_model_version(Lake(settings), ModelVersion(model_id=ADAPTER, stage="ppo", base_model="tiny",
                                                        adapter_path=folder, dataset="ppo", dataset_version="v"))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")


@pytest.mark.parametrize(("kind", "server_setting"), [("vllm", "vllm"), ("llama", "llama-server")])
def test_retroformer_mode_with_a_served_adapter_records_which_adapter_answered(
        servers, retro_home, toy_env, monkeypatch, kind, server_setting):
    server = servers(kind, adapters=("ppo-other", ADAPTER))
    for role in ("ACTOR", "RETROSPECTIVE"):
        for name, value in {"BACKEND": "openai", "MODEL": "tiny", "BASE_URL": server.url}.items():
            monkeypatch.setenv(f"RETRO_{role}__{name}", value)
    monkeypatch.setenv("RETRO_RETROSPECTIVE__ADAPTER_SERVER", server_setting)
    settings = load_settings(preset="tiny")
    register_adapter(settings)
    lake = Lake(settings)
    request = rollout_request(settings, lake, env="toy", split="eval", mode="retroformer", tasks=3, trials=2,
                              adapter=ADAPTER)
    result = rollout(settings, lake, request)
    assert result.success_by_trial == [0.0, 1.0]  # the adapter's reflections name the word; the base's do not
    run = lake.read("SELECT retro_model, retro_model_version FROM lake.runs").row(0)
    assert run == (f"tiny+{ADAPTER}", ADAPTER)
    assert lake.read("SELECT DISTINCT model_version FROM lake.reflections")["model_version"].to_list() == [ADAPTER]
    served = lake.read("SELECT model_id, server, base_url FROM lake.model_servings")  # recorded by the rollout
    assert served.rows() == [(ADAPTER, server_setting, server.url)]
    if kind == "llama":  # the actor's requests switch every adapter off, which llama-server would apply otherwise
        actor = [r["body"] for r in server.requests if "Previous attempt:" not in json.dumps(r["body"])]
        assert actor and all(body["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}] for body in actor)
    # where it is served goes into the registry once checked, and `retro models list` says so
    check = retro("models", "check", "--adapter", ADAPTER, "--json")
    assert check.code == 0 and json.loads(check.out)["model"] == f"tiny+{ADAPTER}"
    served_at = f"{server_setting} {server.url}" + (" lora 1" if kind == "llama" else "")
    listed = json.loads(retro("models", "list", "--json").out)
    assert [row["served"] for row in listed] == [served_at]


def test_models_check_says_how_the_actor_server_continues_a_turn(servers, retro_home, monkeypatch):
    server = servers("llama")
    for name, value in {"BACKEND": "openai", "MODEL": "tiny", "BASE_URL": server.url}.items():
        monkeypatch.setenv(f"RETRO_ACTOR__{name}", value)
    check = retro("models", "check", "--json")
    assert check.code == 0 and json.loads(check.out)["prefill"] == "echoes"
    fresh = servers("fresh")
    monkeypatch.setenv("RETRO_ACTOR__BASE_URL", fresh.url)
    assert "does not continue a prefilled assistant turn" in retro("models", "check").one_line_error


def test_models_export_names_what_is_missing_in_one_line(retro_home, tmp_path, monkeypatch):
    settings = load_settings()
    register_adapter(settings)
    monkeypatch.setenv("RETRO_LLAMA_CPP_DIR", str(tmp_path / "no-llama-cpp"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # PyPI out of reach: the converters' sources cannot be fetched
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    line = retro("models", "export", "--gguf", ADAPTER).one_line_error
    assert "could not download llama.cpp's converters" in line and "RETRO_LLAMA_CPP_DIR" in line
    assert "unknown model version 'ppo-nope'" in retro("models", "export", "--gguf", "ppo-nope").one_line_error
    assert "--outtype must be one of f32" in retro("models", "export", "--gguf", ADAPTER, "--outtype", "q4").one_line_error


# -- the invalid-action guard -----------------------------------------------------------------------------------
def steps(*valid: bool) -> list[Step]:
    return [Step("t", "Thought 1: junk", "Invalid action.", 0.0, v) for v in valid]


def test_guard_judges_each_episode_once_on_its_first_steps():
    guard = ActionGuard.for_run(n_tasks=20)
    assert (guard.window, guard.first_steps) == (8, 2)
    for _ in range(7):
        guard.observe(steps(False))  # too early: not judged
        guard.observe(steps(False, False))
        guard.observe(steps(False, False, False))  # judged already
    guard.observe(steps(False, True))  # one episode that could act
    for _ in range(7):
        guard.observe(steps(False, False))
    with pytest.raises(InvalidActionsError, match="the first 2 steps of the last 8 episodes") as err:
        guard.observe(steps(False, False))
    assert "\n" not in str(err.value) and "'Thought 1: junk'" in str(err.value) and "PREFILL" in str(err.value)


def test_guard_judges_at_least_eight_actions_in_a_small_run():
    assert (ActionGuard.for_run(1).window, ActionGuard.for_run(1).first_steps) == (1, 8)
    assert (ActionGuard.for_run(3).window, ActionGuard.for_run(3).first_steps) == (3, 3)


def test_served_actor_whose_actions_are_all_invalid_stops_the_run_uncommitted(servers, settings, lake, toy_env):
    server = servers("llama")  # echoes, but the actor is told it continues: every action is the echo's first line
    actor = OpenAIBackend(ModelSettings(backend="openai", model="tiny", base_url=server.url, prefill="continues"))
    models = toyenv.models()
    models.actor = actor
    with pytest.raises(InvalidActionsError, match="tiny made no valid action in the first 2 steps of the last 4 "
                                                  "episodes .the last one wrote 'I should answer.'."):
        rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion", tasks=4,
                                                trials=2), models=models)
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 0
    assert sum("Action 2:" in r["body"]["messages"][-1]["content"] for r in server.requests) == 4  # 2 steps each
