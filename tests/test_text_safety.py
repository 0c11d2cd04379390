"""Model output and data are printed as text (issue 29, point 1): never read as rich markup or emoji codes,
never as HTML, and no control character reaches the terminal (it shows as a \\xNN escape). Hypothesis writes arbitrary text, markup-like brackets included, through each place that
prints it: `retro sql` over a real lake with the text stored in a step, `retro envs play`, the CLI's log
lines, and the report's HTML.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import sys
import unicodedata
from html.parser import HTMLParser

import clirun
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from retro.envs import ENVS
from retro.envs.actions import BracketActions
from retro.envs.base import StepResult, Task

# The reported crashes (`[/INST]` from a Llama-2 chat template, a path in brackets from duckdb_settings()),
# rich's markup and emoji syntax, and HTML.
MARKUP = ["[/INST]", "[INST]", "[/work/main/.tmp/]", "[bold]", "[/]", "[red]x[/red]", "[link=file:///etc/passwd]",
          "\\[", "[@click=quit]", ":smile:", ":thumbs_up:", "<b>", "</td>", "<script>alert(1)</script>", "&amp;",
          "&lt;", "'", '"', "%s", "{}", "$x$"]
TEXT = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(st.characters(exclude_characters="\x00"), max_size=8)),
                min_size=1, max_size=6).map("".join).filter(lambda s: s.strip() != "")
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _shown(text: str) -> str:
    """`text` as the terminal should show it: each control character but tab and newline as \\xNN."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _visible(text: str) -> str:
    """What a terminal shows of `text`, wherever rich wrapped it: no whitespace."""
    return "".join(c for c in text if not c.isspace())


def _terminal_safe(out: str) -> bool:
    return not any(unicodedata.category(c) == "Cc" and c != "\n" for c in out)


def _table_cells(out: str) -> str:
    """The cell text of a one-column rich table, borders and padding dropped."""
    return "".join(line[1:-1] for line in out.splitlines() if line.startswith("│"))


# -- retro sql -----------------------------------------------------------------------------------------------
def test_the_reported_crashes_print_their_text(lake):
    lake.append({"steps": [{"run_id": "r", "task_id": "t", "trial": 0, "step": 0,
                            "thought": "I know it.[/INST] Answer: [bold]x"}]})
    thought = clirun.retro("sql", "SELECT thought FROM lake.steps")
    assert thought.code == 0 and "[/INST]" in thought.out and "[bold]x" in thought.out, thought.err
    settings_ = clirun.retro("sql", "SELECT name, value FROM duckdb_settings() WHERE name = 'temp_directory'")
    assert settings_.code == 0 and "temp_directory" in settings_.out, settings_.err


@EXAMPLES
@given(text=TEXT)
def test_retro_sql_prints_any_stored_text_as_text(lake, monkeypatch, text):
    monkeypatch.setenv("COLUMNS", "80")
    step = next(_STEPS)
    lake.append({"steps": [{"run_id": "r", "task_id": "t", "trial": 0, "step": step, "thought": text}]})
    result = clirun.retro("sql", f"SELECT thought FROM lake.steps WHERE step = {step}")
    assert result.code == 0 and not result.err, result.err
    assert _visible(_shown(text)) in _visible(_table_cells(result.out)) and _terminal_safe(result.out)


_STEPS = itertools.count()


# -- retro envs play -----------------------------------------------------------------------------------------
class EchoEpisode:
    text = ""  # what every observation says; set per example

    def reset(self) -> str:
        return self.text

    def step(self, action: str) -> StepResult:
        return StepResult(self.text, 1.0, True, {"success": True})

    def close(self) -> None:
        pass


class EchoEnv(BracketActions):
    """An environment whose task and observations are the example's text."""

    name = "echo"
    action_help = "Look[] looks."
    max_steps = 2

    def __init__(self, settings=None):
        pass

    def splits(self) -> dict[str, int]:
        return {"eval": 1}

    def load_tasks(self, split: str) -> list[Task]:
        return [Task("echo", split, "t", EchoEpisode.text, "")]

    def few_shot(self, task=None) -> str:
        return ""

    def start(self, task: Task) -> EchoEpisode:
        return EchoEpisode()


@EXAMPLES
@given(text=TEXT)
def test_envs_play_prints_observations_as_text(retro_home, monkeypatch, text):
    monkeypatch.setitem(ENVS, "echo", f"{__name__}:EchoEnv")
    monkeypatch.setattr(EchoEpisode, "text", text)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Look[]\n"))
    result = clirun.retro("envs", "play", "echo", "--task", "t")
    assert result.code == 0 and not result.err, result.err
    # the first observation and the step's (tabs print as spaces)
    assert _visible(result.out).count(_visible(_shown(text))) >= 2, (text, result.out)
    assert _terminal_safe(result.out)


# -- logs ----------------------------------------------------------------------------------------------------
@EXAMPLES
@given(text=TEXT)
def test_log_lines_carry_text_verbatim(retro_home, monkeypatch, text):
    """The CLI's log format: a reflection or observation logged with %s arrives as written."""
    from retro import cli

    stream = io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # so that main()'s basicConfig installs its own format
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(sys, "argv", ["retro", "envs", "list"])
    monkeypatch.setattr(cli, "app", lambda **kwargs: logging.getLogger("retro.agent").warning("thought: %s", text))
    cli.main()
    assert stream.getvalue() == f"WARNING retro.agent: thought: {text}\n"


# -- the report's HTML ---------------------------------------------------------------------------------------
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "code", "img", "table",
                "thead", "tbody", "tr", "th", "td"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self._in_cell = tag == "td"
        if self._in_cell:
            self.cells.append("")

    def handle_endtag(self, tag):
        self._in_cell = False if tag == "td" else self._in_cell

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


_MODELS = itertools.count()


@EXAMPLES
@given(text=TEXT)
@example(text="[/INST]\r\n</td><script>x</script> & :smile:")
def test_the_report_shows_stored_text_as_html_text(lake, tmp_path, text):
    from retro.eval.report import write_report

    model_id = f"sft-{next(_MODELS)}"
    lake.append({"model_versions": [{"model_id": model_id, "stage": "sft", "base_model": text, "dataset": text}]})
    page = _Page()
    page.feed(write_report(lake, tmp_path / "report").read_bytes().decode())  # no newline translation
    assert page.tags <= ALLOWED_TAGS, page.tags - ALLOWED_TAGS
    assert text in page.cells


@pytest.mark.parametrize("text", ["[/INST]", ":smile:", "[bold red]x"])
def test_known_errors_print_their_text(lake, text):
    """An error line quotes what the user gave (here a query DuckDB cannot parse) as text."""
    line = clirun.retro("sql", f'SELECT "{text}" FROM lake.steps').one_line_error
    assert text in line
