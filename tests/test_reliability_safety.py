"""Model output is data, never code.

Nothing a model writes is evaluated, executed or formatted into SQL: the code has no such calls (checked
on its syntax tree), and a rollout whose models write SQL, shell and template payloads stores them
verbatim with nothing run. That `retro sql` stays read-only, also against tricks, is test_sql_safety.py.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import toyenv

from retro.agent.request import rollout_request
from retro.agent.spec import Models
from retro.envs import ENVS
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "retro").rglob("*.py"), *(ROOT / "flows").rglob("*.py")])


# -- nothing from a model is run -------------------------------------------------------------------------
def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "?")  # model.eval() is not eval()
    return ".".join(reversed(parts))


RUNS_TEXT = {"eval", "exec", "compile", "__import__", "os.system", "os.popen", "pickle.load", "pickle.loads",
             "marshal.loads", "yaml.load", "yaml.unsafe_load", "shelve.open", "code.interact"}


def test_no_code_evaluates_or_executes_text():
    found = []
    for path in SOURCES:
        for call in _calls(path):
            name = _dotted(call.func)
            shell = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        for k in call.keywords)
            if name in RUNS_TEXT or (name.startswith("subprocess.") and shell):
                found.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
    assert not found, found


def _is_built_string(node: ast.expr) -> bool:
    """An f-string, a concatenation or a .format()/% of strings: SQL assembled at run time."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


SQL_METHODS = {"execute", "executemany", "sql", "read", "query"}


def test_sql_is_assembled_only_inside_the_store():
    """Outside retro/store, every query is a constant or a named .sql file, with values bound (`?`, `$x`).

    Inside it, assembled SQL only names tables and columns from fixed lists (lake.KEYS) and settings;
    rows (model text included) always go in as a registered frame or bound parameters.
    """
    found = []
    for path in SOURCES:
        if path.is_relative_to(ROOT / "retro" / "store"):
            continue
        for call in _calls(path):
            runs_sql = isinstance(call.func, ast.Attribute) and call.func.attr in SQL_METHODS
            if runs_sql and call.args and _is_built_string(call.args[0]):
                found.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not found, found


HOSTILE_THOUGHT = ("'); DROP TABLE lake.trials; -- {question} {0} %s %(x)s $(touch PWNED) `touch PWNED` "
                   "__import__('os').system('touch PWNED')")
HOSTILE_ANSWER = "x'); COPY (SELECT 1) TO 'PWNED.csv'; DROP TABLE lake.steps; --"
HOSTILE_REFLECTION = ("I guessed. Next time use the word {word} \"); DELETE FROM lake.reflections; -- "
                      "{memory} {0} %s ${{HOME}} __import__('os').system('touch PWNED') ends here.")


def test_hostile_model_text_is_stored_verbatim_and_never_run(settings, lake, monkeypatch, tmp_path):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.chdir(tmp_path)

    def actor(prompt: str) -> str:
        if prompt.endswith(":") and "Thought" in prompt.rsplit("\n", 1)[-1]:
            return " " + HOSTILE_THOUGHT + "\n"
        return f" Finish[{HOSTILE_ANSWER}]\n"

    def retro(prompt: str) -> str:
        k = int(prompt.split("code ", 1)[1].split(".", 1)[0])
        return HOSTILE_REFLECTION.replace("{word}", toyenv.secret(k))

    models = Models(ScriptedLLM(actor, name="hostile-actor"), ScriptedLLM(retro, name="hostile-retro"), "base")
    rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion",
                                            tasks=2, trials=2), models=models)

    steps = lake.read("SELECT thought, action, observation FROM lake.steps")
    assert steps.height == 4  # 2 tasks x 2 trials, one step each: nothing dropped, nothing extra
    assert set(steps["thought"]) == {HOSTILE_THOUGHT}
    assert set(steps["action"]) == {f"Finish[{HOSTILE_ANSWER}]"}
    reflections = lake.read("SELECT task_id, text FROM lake.reflections ORDER BY task_id")
    assert reflections["text"].to_list() == [HOSTILE_REFLECTION.replace("{word}", toyenv.secret(k)) for k in (0, 1)]
    memory = lake.read("SELECT memory FROM lake.trials WHERE trial = 1 ORDER BY task_id")["memory"]
    assert [json.loads(m) for m in memory] == [[t] for t in reflections["text"]]  # remembered verbatim too
    counts = lake.read("SELECT (SELECT count(*) FROM lake.trials) AS t, (SELECT count(*) FROM lake.runs) AS r")
    assert counts.row(0) == (4, 1)
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
