"""Property-based tests (hypothesis): the action parsers take any text a model writes, and ratings are
exactly the next trial's return minus this one's, for any returns and any shape of run.
"""

from __future__ import annotations

import itertools
import re
import string

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from retro.agent.parse import clean_line
from retro.agent.rating import compute_ratings, rate_reflections
from retro.envs.actions import bracket_action as parse_action
from retro.envs.hotpotqa import parse_action as hotpotqa_action

ACTION_SHAPE = re.compile(r"[A-Za-z_]\w{0,30}\[[^\[\]\n]*\]")
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
arguments = st.text(alphabet=st.characters(blacklist_characters="[]\n\r", blacklist_categories=("Cs",)), max_size=40)
any_text = st.text(max_size=200)  # every unicode character, newlines and brackets included
# text dense in what the parser looks for: labels, names, brackets, newlines
bracketty = st.text(alphabet="Aab_1 []\n:.Thought Action", max_size=80)
model_text = st.one_of(any_text, bracketty, st.builds(lambda a, n, b: f"{a}{n}[{b}", bracketty, names, bracketty))


# -- the action parser ------------------------------------------------------------------------------------
@given(model_text)
def test_parse_action_takes_any_text(text):
    action = parse_action(text)
    assert action is None or ACTION_SHAPE.fullmatch(action)


@given(st.one_of(model_text, st.builds(lambda n, a, tail: f"{n}[{a}]{tail}", names, arguments, model_text)))
def test_a_parsed_action_parses_to_itself(text):
    action = parse_action(text)
    if action is not None:
        assert parse_action(action) == action


@given(names, arguments, st.text(alphabet=" .,:;!?-", max_size=10), st.text(max_size=30))
def test_the_action_is_found_after_any_preamble(name, argument, gap, tail):
    """`I will Search[x] now` -> Search[x]: the first Name[...] wins, whatever follows it."""
    action = parse_action(f"I think{gap} {name}[{argument}]{tail}")
    assert action == f"{name}[{argument.strip()}]"


@given(model_text)
def test_clean_line_is_one_line(text):
    line = clean_line(text)
    assert "\n" not in line and line == line.strip()
    assert line in text


@given(model_text)
def test_hotpotqa_parser_takes_any_text(text):
    parsed = hotpotqa_action(text)
    if parsed is not None:
        verb, argument = parsed
        assert verb in {"search", "lookup", "finish"}
        assert argument == " ".join(argument.split())  # whitespace normalised
        assert argument or verb == "finish"


@given(st.sampled_from(["Search", "search", "LOOKUP", "Finish"]), arguments, st.sampled_from(["", ".", " . "]))
def test_hotpotqa_parser_reads_what_a_small_model_writes(verb, argument, ending):
    assume(argument.strip() or verb.lower() == "finish")
    parsed = hotpotqa_action(f"Action 3: {verb}[{argument}]{ending}")
    assert parsed == (verb.lower(), " ".join(argument.split()))


# -- the rating computation ---------------------------------------------------------------------------------
returns = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
candidate_rows = st.lists(st.tuples(st.sampled_from(string.ascii_lowercase[:4]), st.integers(0, 9), returns, returns),
                          max_size=30, unique_by=lambda r: (r[0], r[1]))


@given(candidate_rows, st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8))
def test_rating_is_exactly_the_return_difference(rows, label_version):
    candidates = pl.DataFrame(
        {"run_id": ["r"] * len(rows), "task_id": [r[0] for r in rows], "trial": [r[1] for r in rows],
         "sample": [r[1] % 3 for r in rows], "return_before": [r[2] for r in rows], "return_after": [r[3] for r in rows]},
        schema={"run_id": pl.Utf8, "task_id": pl.Utf8, "trial": pl.Int64, "sample": pl.Int32,
                "return_before": pl.Float64, "return_after": pl.Float64},
    )
    rated = compute_ratings(candidates, label_version)
    assert rated.height == len(rows)
    assert rated.columns == ["run_id", "task_id", "trial", "sample", "label_version", "return_before", "return_after",
                             "rating"]
    for row, (_, _, before, after) in zip(rated.iter_rows(named=True), rows):
        assert row["rating"] == after - before  # exactly, in float64
        assert row["label_version"] == label_version


# A run: per task, the returns of its trials in order (a task stops after its first success, G = 1).
trial_returns = st.lists(st.sampled_from([0.0, 0.25, 0.5]), min_size=0, max_size=3).map(lambda fails: fails + [1.0])
runs = st.lists(st.tuples(trial_returns, st.booleans()), min_size=1, max_size=4)
RUN_IDS = itertools.count()


@pytest.mark.slow  # each example writes and reads the lake (about 2 s)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs)
def test_rate_reflections_pairs_each_reflection_with_the_next_trial(lake, run):
    """Through the lake: every reflection whose next trial exists gets one rating, G(i+1) - G(i); a
    reflection on a task's last stored trial waits; rating twice writes nothing."""
    run_id = f"prop-{next(RUN_IDS)}"  # one lake for all examples: a fresh run id per example
    trials, reflections, expected = [], [], {}
    for k, (rets, last_is_stored) in enumerate(run):
        rets = rets if last_is_stored else rets[:-1]  # a crashed run may lack the last trial
        for i, ret in enumerate(rets):
            trials.append({"run_id": run_id, "task_id": f"t{k}", "trial": i, "episode_return": ret,
                           "success": ret == 1.0})
            if ret < 1.0:  # a failed trial was reflected on
                reflections.append({"run_id": run_id, "task_id": f"t{k}", "trial": i, "text": f"r{k}.{i}"})
                if i + 1 < len(rets):
                    expected[(f"t{k}", i)] = rets[i + 1] - ret
    lake.append({"trials": trials, "reflections": reflections})
    assert rate_reflections(lake, "prop") == len(expected)
    got = lake.read("SELECT task_id, trial, rating FROM lake.ratings WHERE run_id = ? AND label_version = 'prop'",
                    [run_id])
    assert {(r["task_id"], r["trial"]): r["rating"] for r in got.iter_rows(named=True)} == expected
    assert rate_reflections(lake, "prop") == 0
