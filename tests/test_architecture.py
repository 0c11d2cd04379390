"""Dependencies point one way, and every CLI command has help and is named in the README."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"config": 0, "errors": 0, "provenance": 0, "store": 1, "llm": 1, "envs": 1,
         "agent": 2, "train": 2, "eval": 2, "commands": 3, "cli": 3}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_retro_never_imports_prefect_and_layers_point_down():
    bad = []
    for path in (ROOT / "retro").rglob("*.py"):
        rel = path.relative_to(ROOT / "retro").parts
        mine = LAYER.get(rel[0].removesuffix(".py"), 0)
        for name in imports_of(path):
            top = name.split(".")
            if top[0] == "prefect" and rel[0] != "commands":
                bad.append(f"{path.name} imports prefect")
            if top[0] == "flows" and rel[0] != "commands":
                bad.append(f"{path.name} imports flows")
            if top[0] == "retro" and len(top) > 1 and LAYER.get(top[1], 0) > mine:
                bad.append(f"{'/'.join(rel)} imports {name}")
    # envs and llm know nothing of each other
    for sub, other in (("envs", "retro.llm"), ("llm", "retro.envs")):
        for path in (ROOT / "retro" / sub).rglob("*.py"):
            if any(n.startswith(other) for n in imports_of(path)):
                bad.append(f"{path.name} imports {other}")
    assert not bad, bad


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
