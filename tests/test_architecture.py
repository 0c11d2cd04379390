"""Dependencies point one way, and every CLI command has help and is named in the README."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One layer per package (or top-level module) of retro/, lowest first: a package imports only from layers
# below its own, so packages on one layer know nothing of each other (envs and llm, say).
LAYERS = [
    {"__init__", "errors"},
    {"config", "provenance", "duckdb_ext"},
    {"store", "llm", "envs"},  # the lake, the models, the environments
    {"eval"},  # metrics and reports over stored trials
    {"agent"},  # prompts, the runner, requests and specs
    {"train"},  # data sets and trainers (environment rewards play the runner)
    {"orchestrate"},  # rollouts, shards, evaluation and promotion, the comparison
    {"commands"},
    {"cli"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
FLOWS_DOOR = ROOT / "retro" / "commands" / "flows.py"  # the one module of retro/ that starts flows


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions (lazy imports count too)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_package_of_retro_has_a_layer():
    found = {p.name.removesuffix(".py") for p in (ROOT / "retro").iterdir()
             if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py")))}
    assert found == set(LAYER), f"give these a layer in LAYERS: {sorted(found ^ set(LAYER))}"


def test_layers_point_down_and_only_one_module_starts_flows():
    bad = []
    for path in (ROOT / "retro").rglob("*.py"):
        rel = path.relative_to(ROOT / "retro").parts
        mine = rel[0].removesuffix(".py")
        for name in imports_of(path):
            top = name.split(".")
            if top[0] in ("prefect", "flows") and path != FLOWS_DOOR:
                bad.append(f"{'/'.join(rel)} imports {name}")
            if top[0] == "retro" and len(top) > 1 and top[1] != mine and LAYER[top[1]] >= LAYER[mine]:
                bad.append(f"{'/'.join(rel)} imports {name}")
    assert not bad, bad


def test_a_rollout_on_the_openai_backend_never_loads_torch(tmp_path):
    """The rollout path with served models (request, models, runner, registry) imports no torch, in a fresh
    process: a scripted server answers, so the run goes to the end."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %(tests)r)
        import toyenv
        from fakeserver import served
        from retro.agent.request import rollout_request
        from retro.config import load_settings
        from retro.envs import ENVS
        from retro.orchestrate.rollout import rollout
        from retro.store import Lake

        ENVS["toy"] = "toyenv:ToyEnv"
        server = served("vllm", lambda text, adapter: " Finish[nothing]" + chr(10))
        model = {"backend": "openai", "model": "tiny", "base_url": server.url, "prefill": "continues"}
        settings = load_settings(home=%(home)r, actor=model, retrospective=model)
        lake = Lake(settings)
        result = rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion",
                                                         tasks=2, trials=2))
        server.close()
        assert result.written["trials"] == 4, result
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """) % {"tests": str(ROOT / "tests"), "home": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RETRO_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_every_command_has_help_and_is_in_the_readme():
    import typer.main

    from retro.cli import app

    readme = (ROOT / "README.md").read_text()
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        assert command.help, f"retro {name} has no help"
        if f"retro {name}" not in readme:
            missing.append(name)
    assert not missing, f"commands not named in README: {missing}"
