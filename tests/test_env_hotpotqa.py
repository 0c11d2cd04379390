"""HotPotQA on the closed corpus: gold paths win, wrong answers lose, Search / Lookup behave like ReAct's,
the corpus is built once per data version, and malformed actions are observations, not exceptions."""

from __future__ import annotations

import shutil

import pytest

from retro.config import load_settings
from retro.envs import get_env
from retro.envs.hotpotqa import DATA_DIR, SPLIT_FILES, HotpotQA, parse_action
from retro.envs.text import exact_match, f1_score, normalize_answer
from retro.envs.wiki import Wiki
from retro.errors import UnknownEnvError


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("hotpotqa-home")


@pytest.fixture(scope="module")
def env(home):
    environment = get_env("hotpotqa", load_settings(home=home, preset="tiny"))
    yield environment
    environment.close()


def _task(env, task_id="5a7613c15542994ccc9186bf"):
    return next(t for t in env.load_tasks("eval") if t.task_id == task_id)


def _titles(task):
    return list(dict.fromkeys(title for title, _ in task.metadata["supporting_facts"]))


def test_splits_and_tasks(env):
    assert env.splits() == {"eval": 100, "train": 98}
    tasks = env.load_tasks("eval")
    assert [t.task_id for t in tasks] == sorted(t.task_id for t in tasks)
    first = _task(env)
    assert first.answer == "Gesellschaft mit beschränkter Haftung"
    assert first.metadata["type"] == "bridge" and first.metadata["level"] == "hard"
    assert first.metadata["supporting_facts"][0] == ["VIVA Media", 0]
    assert not {t.task_id for t in tasks} & {t.task_id for t in env.load_tasks("train")}
    with pytest.raises(UnknownEnvError, match="choose one of eval, train"):
        env.load_tasks("dev")


def test_gold_path_scores_one_on_ten_tasks(env):
    for task in env.load_tasks("eval")[:10]:
        episode = env.start(task)
        assert episode.reset() == f"Question: {task.question}"
        for title in _titles(task):
            result = episode.step(f"Search[{title}]")
            assert not result.done and not result.info["invalid"]
            assert not result.observation.startswith("Could not find"), title
        result = episode.step(f"Finish[{task.answer}]")
        assert (result.reward, result.done, result.observation) == (1.0, True, "Answer is CORRECT")
        assert result.info == {"invalid": False, "success": True, "em": 1.0, "f1": 1.0, "score": 1.0,
                               "answer": task.answer}


def test_wrong_answer_scores_zero_and_the_episode_stays_over(env):
    episode = env.start(_task(env))
    result = episode.step("Finish[Aktiengesellschaft]")
    assert (result.reward, result.done, result.info["success"], result.info["em"]) == (0.0, True, False, 0.0)
    assert result.observation == "Answer is INCORRECT"
    after = episode.step("Search[VIVA Media]")
    assert after.done and after.info["invalid"] and after.reward == 0.0
    episode.reset()
    assert episode.step("Finish[gesellschaft mit beschränkter haftung.]").reward == 1.0  # SQuAD normalisation


def test_f1_return_mode(home, env):
    f1_env = HotpotQA(load_settings(home=home, preset="tiny", rollout={"hotpotqa_return": "f1"}))
    task = _task(env)
    result = f1_env.start(task).step("Finish[Gesellschaft mit Haftung]")
    assert result.info["em"] == 0.0 and not result.info["success"]
    assert result.reward == pytest.approx(f1_score("Gesellschaft mit Haftung", task.answer)) == pytest.approx(6 / 7)
    assert result.info["score"] == result.reward
    assert env.start(task).step("Finish[Gesellschaft mit Haftung]").reward == 0.0  # em mode on the same answer
    f1_env.close()


def test_search_unknown_entity_suggests_similar_titles(env):
    episode = env.start(_task(env))
    result = episode.step("Search[VIVA Media Aktiengesellschaft]")
    assert result.observation.startswith("Could not find VIVA Media Aktiengesellschaft. Similar: [")
    assert "'VIVA Media'" in result.observation
    assert not result.info["invalid"] and not result.done
    assert episode.step("Lookup[VIVA]").observation.startswith("There is no paragraph")


def test_search_is_case_and_space_tolerant(env):
    episode = env.start(_task(env))
    exact = episode.step("Search[VIVA Media]").observation
    assert exact.startswith("VIVA Media GmbH")
    assert episode.step("  search[  viva   media ]  ").observation == exact
    assert episode.step("Action 3: SEARCH[Viva Media].").observation == exact


def test_lookup_cycles_through_results(env):
    episode = env.start(_task(env))
    page = env.wiki.page("VIVA Media")
    expected = [s for s in page.sentences if "viva" in s.lower()]
    assert len(expected) >= 2
    episode.step("Search[VIVA Media]")
    for i, sentence in enumerate(expected, start=1):
        assert episode.step("Lookup[viva]").observation == f"(Result {i} / {len(expected)}) {sentence}"
    assert episode.step("Lookup[viva]").observation == "No more results."
    assert episode.step("Lookup[Germany]").observation.startswith("(Result 1 / ")  # a new keyword restarts
    assert episode.step("Lookup[zebra crossing]").observation == "No more results."


@pytest.mark.parametrize("action", ["", "Search", "Search[]", "Jump[high]", "I think the answer is 3", "Lookup[ ]"])
def test_malformed_actions_are_observations(env, action):
    result = env.start(_task(env)).step(action)
    assert result.observation.startswith("Invalid action: ")
    assert result.observation.endswith("Valid actions are Search[<topic>], Lookup[<keyword>], Finish[<answer>].")
    assert result.info["invalid"] and not result.done and result.reward == 0.0


def test_episodes_side_by_side_keep_their_own_state(env):
    task = _task(env)
    a, b = env.start(task), env.start(task)
    a.step("Search[VIVA Media]")
    b.step("Search[Gesellschaft mit beschränkter Haftung]")
    assert a.step("Lookup[VIVA]").observation.startswith("(Result 1 /")
    assert b.step("Lookup[VIVA]").observation == "No more results."


def test_parse_action():
    assert parse_action("finish[]") == ("finish", "")
    assert parse_action("Lookup[ two  words ]") == ("lookup", "two words")
    assert parse_action("Search[a [nested] title]") == ("search", "a [nested] title")
    assert parse_action("Search[x] and more") is None


def test_answer_scoring_helpers():
    assert normalize_answer("The  Beatles!") == "beatles"
    assert exact_match("an Apple", "apple") == 1.0
    assert f1_score("yes", "no") == 0.0 and f1_score("no", "no") == 1.0
    assert f1_score("New York City", "New York") == pytest.approx(0.8)
    assert f1_score("", "anything") == 0.0


def test_few_shot_is_written_from_train_gold_paths(env):
    text = env.few_shot()
    assert text == env.few_shot(_task(env))  # the same examples for every task
    for line in ("Thought 1: ", "Action 1: Search[", "Observation 1: ", "Lookup[", "(Result 1 / ", "Finish["):
        assert line in text
    assert text.count("Answer is CORRECT") == text.count("Question: ") == 2
    eval_questions = {t.question for t in env.load_tasks("eval")}
    train_questions = {t.question for t in env.load_tasks("train")}
    asked = [line.removeprefix("Question: ") for line in text.splitlines() if line.startswith("Question: ")]
    assert all(q in train_questions and q not in eval_questions for q in asked)  # eval stays held out
    assert all(len(line) < 340 for line in text.splitlines() if line.startswith("Observation"))


def test_corpus_built_once_and_rebuilt_when_data_change(tmp_path):
    sources = [tmp_path / name for name in SPLIT_FILES.values()]
    for path in sources:
        shutil.copy(DATA_DIR / path.name, path)
    cache = tmp_path / "cache"
    first = Wiki(sources, cache)
    path = first.ensure_built()
    assert len(first) == 1963
    stamp = path.stat().st_mtime_ns
    first.close()

    again = Wiki(sources, cache)
    assert again.ensure_built() == path and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert again.page("viva media").title == "VIVA Media"
    again.close()

    record = '{"id": "x", "question": "q", "answer": "a", "type": "bridge", "level": "hard", ' \
             '"supporting_facts": [], "context": [["Zzyzx Road", ["Zzyzx Road is a road.", " It is in California."]]]}'
    with sources[1].open("a") as handle:
        handle.write(record + "\n")
    changed = Wiki(sources, cache)
    new_path = changed.ensure_built()
    assert new_path != path and not path.exists()  # a new data version gets a new file; the old one goes
    assert len(changed) == 1964 and changed.page("zzyzx road").sentences == ("Zzyzx Road is a road.",
                                                                          "It is in California.")
    assert [p.name for p in cache.iterdir()] == [new_path.name]  # no temporary files left behind
    changed.close()
