"""Actions valid by construction: each environment's actions at real steps, their grammar as llama.cpp's GBNF
(read here by llguidance, the hf backend's engine), and constrained rollouts through the runner against fake
servers that honour the grammar, ignore it, or refuse it."""

from __future__ import annotations

import importlib.util
import json
import re

import llguidance
import pytest
import toyenv
from fakeserver import FakeServer, byte_vocabulary, decode_within, served
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from retro.agent.constrain import ConstraintIgnoredError, action_grammar, allows
from retro.agent.prompts import OUTCOME_NO_ACTIONS, OUTCOME_NO_ANSWER
from retro.agent.runner import LATER_FIELDS, Runner
from retro.agent.spec import Models, make_spec
from retro.config import ActorSettings, ModelSettings
from retro.envs import ENVS, get_env
from retro.envs.base import ActionSpace, StepResult
from retro.envs.hotpotqa import ACTIONS as HOTPOTQA_ACTIONS
from retro.envs.webshop import WebShop, _button
from retro.errors import BackendRefusedError
from retro.llm.base import GenParams
from retro.llm.openai_compat import OpenAIBackend, request_body
from retro.llm.scripted import ScriptedLLM

WEBSHOP_GOALS = 1500  # the test catalogue of test_env_webshop.py: a few seconds to build
needs_alfworld = pytest.mark.skipif(importlib.util.find_spec("alfworld") is None,
                                    reason="the alfworld extra is not installed: just setup")
AWKWARD = ('say "hi"', "back\\slash", "x]y[z", "a^b-c", "naïve 東京 😀", "tab\there", "click[< prev]", "[Next >]",
           "nul\x00a", "bell\x07", "\u2028 sep")


def grammar_takes(grammar: str, text: str) -> bool:
    """Whether llguidance, reading the GBNF, accepts `text` as a whole completion."""
    matcher = llguidance.LLMatcher(byte_vocabulary(), llguidance.grammar_from("gbnf", grammar))
    assert not matcher.is_error(), matcher.get_error()
    return matcher.try_consume_tokens(list(text.encode())) == len(text.encode()) and matcher.is_accepting()


# -- the grammar -----------------------------------------------------------------------------------------------
def test_the_grammar_of_hotpotqas_verbs():
    assert action_grammar(HOTPOTQA_ACTIONS) == (
        'root ::= " "? action\n'
        'action ::= "Search[" text0 "]" | "Lookup[" text1 "]" | "Finish[" text2 "]"\n'
        + "".join(f"text{i} ::= [^0-9A-Za-z\\n\\r\\][]* [0-9A-Za-z] [^\\n\\r\\][]*\n" for i in range(3)))


@pytest.mark.parametrize(("text", "taken"), [
    ("Search[Paris]", True), (" Lookup[born in 1950]", True), ("Finish[東京 7]", True), (" Finish[yes]", True),
    ("  Search[Paris]", False),  # one optional space, not two
    ("Search[]", False), ("Search[ ]", False), ("Finish[!?]", False),  # no letter or digit: no argument
    ("Search[a[b]", False), ("Search[a]b]", False), ("Search[Paris]\n", False), ("Search[Par\nis]", False),
    ("search[Paris]", False), ("Search[Paris] now", False), ("Paris", False),
])
def test_a_forms_text_is_one_line_with_a_word_and_no_bracket(text, taken):
    grammar = action_grammar(HOTPOTQA_ACTIONS)
    assert grammar_takes(grammar, text) is taken and allows(HOTPOTQA_ACTIONS, text) is taken


def test_awkward_literals_are_taken_exactly():
    space = ActionSpace(choices=AWKWARD, forms=(('quote "', '"'),))
    grammar = action_grammar(space)
    for choice in AWKWARD:
        assert grammar_takes(grammar, choice) and grammar_takes(grammar, " " + choice) and allows(space, choice)
        for near in (choice[:-1], choice + "x", choice.upper(), choice.replace(" ", "  ")):
            if near not in AWKWARD:
                assert not grammar_takes(grammar, near) and not allows(space, near), near
    assert grammar_takes(grammar, 'quote "it\'s [a] \\ test"') and allows(space, 'quote "it\'s [a] \\ test"')
    assert not grammar_takes(grammar, 'quote "say "hi""') and not allows(space, 'quote "say "hi""')


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), min_size=1),
                min_size=1, max_size=4, unique=True),
       st.text(st.characters(exclude_categories=("Cs",)), max_size=6))
def test_any_choices_are_exactly_the_lines_the_grammar_takes(choices, other):
    space = ActionSpace(choices=tuple(choices))
    grammar = action_grammar(space)
    for choice in choices:
        assert grammar_takes(grammar, choice) and allows(space, choice)
    taken = other in choices or (other[:1] == " " and other[1:] in choices)
    assert grammar_takes(grammar, other) is taken and allows(space, other) is taken


def test_an_empty_space_has_no_grammar():
    assert ActionSpace().empty and not allows(ActionSpace(), "look")
    with pytest.raises(ValueError, match="no action exists"):
        action_grammar(ActionSpace())


def test_the_request_carries_the_grammar_for_llama_cpp_and_vllm():
    params = GenParams(grammars=("root ::= \"a\"", None))
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Action 1:"}]
    _, constrained = request_body("tiny", chat, params, 0, None, params.row_grammar(0))
    _, free = request_body("tiny", chat, params, 0, None, params.row_grammar(1))
    assert constrained["grammar"] == constrained["structured_outputs"]["grammar"] == 'root ::= "a"'
    assert "grammar" not in free and "structured_outputs" not in free


# -- the setting -----------------------------------------------------------------------------------------------
def test_constraint_is_on_for_the_embedded_actor_and_off_for_served_ones():
    assert ActorSettings().constrains_actions()  # the embedded model on the local engine
    assert ActorSettings(backend="hf").constrains_actions()
    assert not ActorSettings(backend="openai", model="tiny").constrains_actions()  # the paper's free ReAct
    assert not ActorSettings(backend="openai").constrains_actions()
    assert not ActorSettings(constrain_actions=False).constrains_actions()
    assert ActorSettings(backend="openai", constrain_actions=True).constrains_actions()
    assert not ActorSettings(model="/models/other.gguf").constrains_actions()


def test_the_constraint_is_part_of_the_run_id_and_off_keeps_old_ids(settings):
    models = Models(ScriptedLLM(lambda p: ""), None, None)
    settings.actor.constrain_actions = False
    free = make_spec(settings, models, "react", "hotpotqa", "eval", ["a"], 1)
    settings.actor.constrain_actions = None
    constrained = make_spec(settings, models, "react", "hotpotqa", "eval", ["a"], 1)
    assert (free.constrain_actions, constrained.constrain_actions) == (False, True)
    assert LATER_FIELDS["constrain_actions"] is False and free.run_id != constrained.run_id


# -- each environment's actions at real steps --------------------------------------------------------------------
def test_hotpotqa_has_its_three_verbs_at_every_step(settings):
    env = get_env("hotpotqa", settings)
    task = env.load_tasks("eval")[0]
    episode = env.start(task)
    episode.reset()
    title = task.metadata["supporting_facts"][0][0]
    for line in (f" Search[{title}]", " Lookup[the]", " Search[東京 (city)]", " Finish[no]"):
        space = episode.actions()
        assert space.forms == (("Search[", "]"), ("Lookup[", "]"), ("Finish[", "]")) and not space.choices
        assert allows(space, line)
        action = env.parse_action(line)  # the environment's own parser reads every line the space allows
        assert action == line.strip() and not episode.step(action).info["invalid"]
    assert episode.done
    env.close()


def bracketed(observation: str) -> set[str]:
    """The buttons a page shows, as names a click takes."""
    return {_button(label) for label in re.findall(r"\[([^\[\]\n]+)\]", observation)}


def test_webshop_offers_the_search_box_then_exactly_the_buttons_of_each_page(settings):
    env = WebShop(settings, limit=WEBSHOP_GOALS)
    task = env.load_tasks("eval")[0]
    path = env.gold_path(task)
    episode = env.start(task)
    pages = []
    episode.reset()
    assert episode.actions() == ActionSpace(forms=(("search[", "]"),), text_excludes="[]")  # a page with a box
    for n, action in enumerate(path[:-1], start=1):
        assert not episode.step(action).info["invalid"]
        space = episode.actions()
        clicks = [env.parse_action(choice) for choice in space.choices]
        assert not space.forms and clicks == list(space.choices)  # each reads back as written
        pages.append(episode.page)
        names = {_button(c.removeprefix("click[").removesuffix("]")) for c in clicks}
        assert names == bracketed(episode.observation())  # exactly the buttons the page shows
        for choice in space.choices:  # every one of them is a valid click on this page
            trial = env.start(task)
            trial.reset()
            for done in path[:n]:
                trial.step(done)
            assert not trial.step(choice).info["invalid"], choice
    assert {"results", "item"} <= set(pages)
    assert path[-1] in episode.actions().choices and episode.step(path[-1]).done


def test_webshop_leaves_out_an_option_a_click_would_read_as_another_button(settings):
    env = WebShop(settings, limit=WEBSHOP_GOALS)
    episode = env.start(env.load_tasks("eval")[0])
    episode.page, episode.product = "item", {"options": {"size": ["Next", "large", "a [b]"]}}
    assert episode.actions().choices == ("click[back to search]", "click[< prev]", "click[large]",
                                         "click[description]", "click[features]", "click[buy now]")


@needs_alfworld
def test_alfworld_offers_the_games_admissible_commands(settings):
    env = get_env("alfworld", settings)
    task = next(t for t in env.load_tasks("valid_unseen") if t.metadata["task_type"] == "pick_and_place")
    episode = env.start(task)
    try:
        episode.reset()
        for action in task.metadata["walkthrough"][:3]:
            space = episode.actions()
            assert set(space.choices) == set(episode.admissible) and not space.forms  # none left out
            assert {"look", "inventory"} <= set(space.choices) and action in space.choices
            assert all(env.parse_action(choice) == choice for choice in space.choices)
            assert not episode.step(action).info["invalid"]
        for other in sorted(episode.actions().choices)[:3]:
            assert not episode.step(other).info["invalid"], other
    finally:
        episode.close()


# -- constrained rollouts through the runner ---------------------------------------------------------------------
JUNK = {"hotpotqa": "Search for the entity", "webshop": "I want to buy it", "alfworld": "I should look for it"}
PREFILL = {"vllm": "continues", "llama": "echoes"}


MARKERS = {"web store": "webshop", "household": "alfworld"}  # words of each instruction


def junk_model(text: str, adapter: str | None) -> str:
    """An actor that thinks, then writes a sentence instead of an action (what small models do)."""
    if re.search(r"Thought \d+:$", text):
        return " I act now.\n"
    return f" {JUNK[next((env for marker, env in MARKERS.items() if marker in text), 'hotpotqa')]}.\n"


def environment(name: str, settings):
    return WebShop(settings, limit=WEBSHOP_GOALS) if name == "webshop" else get_env(name, settings)


def run(settings, lake, env_name: str, server: FakeServer, kind: str, constrain: bool):
    settings.actor.constrain_actions = constrain
    settings.rollout.max_steps = 3  # the invalid-action guard judges a served actor's first 4 steps
    env = environment(env_name, settings)
    split = env.held_out_split
    task_ids = [t.task_id for t in env.load_tasks(split)[:2]]
    actor = OpenAIBackend(ModelSettings(backend="openai", model="tiny", base_url=server.url, prefill=PREFILL[kind]))
    spec = make_spec(settings, Models(actor, None, None), "react", env_name, split, task_ids, 1)
    return Runner(lake, env, actor, None, spec, config_json=settings.config_json()).run()


@pytest.mark.parametrize(("env_name", "kind"), [
    ("hotpotqa", "vllm"), ("webshop", "llama"),
    pytest.param("alfworld", "vllm", marks=needs_alfworld)])
def test_a_constrained_rollout_stores_only_valid_steps(settings, lake, env_name, kind):
    server = served(kind, junk_model)
    try:
        free = run(settings, lake, env_name, server, kind, constrain=False)
        server.requests.clear()
        result = run(settings, lake, env_name, server, kind, constrain=True)
    finally:
        server.close()
    query = "SELECT action, valid FROM lake.steps WHERE run_id = ?"
    assert not lake.read(query, [free.run_id])["valid"].any()  # the same actor, free: not one action the game takes
    constrained = lake.read(query, [result.run_id])
    assert constrained.height >= 2 and constrained["valid"].all(), constrained
    field = "grammar" if kind == "llama" else "structured_outputs"
    for request in server.requests:
        body = request["body"]
        acting = body["messages"][-1]["content"].rstrip().split("\n")[-1].startswith("Action")
        assert (field in body) is acting  # every action request is constrained, no thought request is
        if acting:
            assert body["grammar"] == body["structured_outputs"]["grammar"]
    assert sum(field in r["body"] for r in server.requests) == constrained.height
    config = json.loads(lake.read("SELECT config FROM lake.runs WHERE run_id = ?", [result.run_id]).item())
    assert config["actor"]["constrain_actions"] is True


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")


class Cornered(toyenv.ToyEpisode):
    """A toy episode where one action exists at first, and none after it."""

    steps = 0

    def actions(self) -> ActionSpace:
        return ActionSpace(choices=("Look[]",)) if self.steps == 0 else ActionSpace()

    def step(self, action: str) -> StepResult:
        self.steps += 1
        return super().step(action)


class CorneredEnv(toyenv.ToyEnv):
    def start(self, task):
        return Cornered(task)


class Recording(ScriptedLLM):
    def __init__(self, respond):
        super().__init__(respond)
        self.params: list[GenParams] = []

    def generate(self, prompts, params):
        self.params.append(params)
        return super().generate(prompts, params)


def test_a_step_where_no_action_exists_ends_the_trial_without_a_request(settings, lake, toy):
    actor = Recording(lambda p: " I look.\n" if p.endswith(":") and "Thought" in p[-12:] else " Look[]\n")
    settings.actor.constrain_actions = True
    spec = make_spec(settings, Models(actor, None, None), "react", "toy", "eval", ["eval-00"], 1)
    result = Runner(lake, CorneredEnv(), actor, None, spec).run()
    trial = lake.read("SELECT n_steps, n_invalid, stop_reason FROM lake.trials WHERE run_id = ?", [result.run_id])
    assert trial.row(0) == (1, 0, "no_actions")
    assert actor.calls == 2 and actor.params[0].grammars == ()  # step 1's thought (free) and action; no more
    assert actor.params[1].grammars == (action_grammar(ActionSpace(choices=("Look[]",))),)


class Broken(toyenv.ToyEpisode):
    def actions(self) -> ActionSpace:
        raise KeyError("page")


class BrokenEnv(toyenv.ToyEnv):
    def start(self, task):
        return Broken(task) if task.task_id == "eval-00" else toyenv.ToyEpisode(task)


def test_an_episode_whose_actions_fail_ends_alone_as_an_environment_error(settings, lake, toy):
    actor = Recording(toyenv.actor_policy)
    settings.actor.constrain_actions = True
    spec = make_spec(settings, Models(actor, None, None), "react", "toy", "eval", ["eval-00", "eval-01"], 1)
    result = Runner(lake, BrokenEnv(), actor, None, spec).run()
    trials = lake.read("SELECT task_id, n_steps, stop_reason, error FROM lake.trials WHERE run_id = ? ORDER BY "
                       "task_id", [result.run_id]).rows()
    assert trials == [("eval-00", 0, "env_error", "KeyError: 'page'"), ("eval-01", 1, "finished", None)]


def test_an_episode_without_actions_runs_free(settings, lake, toy):
    actor = Recording(toyenv.actor_policy)
    settings.actor.constrain_actions = True
    spec = make_spec(settings, Models(actor, None, None), "react", "toy", "eval", ["eval-00", "eval-01"], 1)
    Runner(lake, toyenv.ToyEnv(), actor, None, spec).run()
    assert actor.calls > 0 and all(params.grammars == () for params in actor.params)


def test_a_server_that_ignores_the_grammar_stops_the_run_uncommitted(settings, lake):
    server = served("vllm", junk_model, grammars=False)  # as Ollama: the field is dropped, the text is free
    try:
        with pytest.raises(ConstraintIgnoredError) as err:
            run(settings, lake, "hotpotqa", server, "vllm", constrain=True)
    finally:
        server.close()
    message = str(err.value)
    assert "\n" not in message and "RETRO_ACTOR__CONSTRAIN_ACTIONS=false" in message and server.url in message
    assert "Search for the entity." in message
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 0


def test_a_server_that_refuses_the_grammar_is_one_line_naming_it_and_the_setting(settings, lake):
    server = FakeServer()
    thought = json.dumps({"choices": [{"message": {"role": "assistant", "content": " I search."}}],
                          "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    refusal = json.dumps({"error": {"message": "Unrecognized request argument supplied: grammar"}})
    server.script = [(200, thought), (200, thought), (400, refusal), (400, refusal)]
    try:
        with pytest.raises(BackendRefusedError) as err:
            run(settings, lake, "hotpotqa", server, "vllm", constrain=True)
    finally:
        server.close()
    message = str(err.value)
    assert "\n" not in message and f"LLM server at {server.url} refused" in message
    assert "Unrecognized request argument supplied: grammar" in message
    assert "RETRO_ACTOR__CONSTRAIN_ACTIONS=false" in message and "API key" not in message
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 0


def test_decode_within_is_a_server_that_honours_the_grammar():
    """The fake servers' constrained decoding, itself checked: the model's text while allowed, then an end."""
    grammar = action_grammar(HOTPOTQA_ACTIONS)
    assert decode_within(grammar, " Search[Paris]\n", 64) == " Search[Paris]"
    assert decode_within(grammar, " Search for Paris", 64) == " Search[a]"
    assert decode_within(grammar, "I think", 64) == " Finish[a]"


def test_a_trial_ended_by_no_actions_is_told_so_to_the_retrospective_model(settings, lake, toy):
    actor = ScriptedLLM(lambda p: " I look.\n" if p.endswith(":") and "Thought" in p[-12:] else " Look[]\n")
    retro = ScriptedLLM(lambda p: "Reflection: Look elsewhere first.")
    settings.actor.constrain_actions = True
    spec = make_spec(settings, Models(actor, retro, "base"), "reflexion", "toy", "eval", ["eval-00"], 2)
    result = Runner(lake, CorneredEnv(), actor, retro, spec).run()
    prompt = lake.read("SELECT prompt FROM lake.reflections WHERE run_id = ?", [result.run_id]).item()
    assert OUTCOME_NO_ACTIONS in prompt and OUTCOME_NO_ANSWER not in prompt
