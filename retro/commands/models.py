"""`retro models ...`: check that the configured models load and generate.

Each command is one function decorated with `@models_app.command()`; `register` mounts the group.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from retro.commands.common import console, print_frame, settings

models_app = typer.Typer(
    help="Model backends: check that the configured models load and generate.", no_args_is_help=True
)

CHECK_PROMPT = [{"role": "user", "content": "In one short sentence: what is the capital of France?"}]


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command()
def check(
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Load the actor model (converting the embedded one once), reply to a short prompt, print tokens/s.

    Example: retro models check
    """
    from retro.llm import GenParams, make_llm

    cfg = settings()
    start = time.perf_counter()
    llm = make_llm(cfg.actor, cfg)
    load_s = time.perf_counter() - start
    gen = llm.generate([CHECK_PROMPT], GenParams(max_new_tokens=max_new_tokens))
    tokens = gen.completion_tokens[0]
    result = {
        "model": llm.name,
        "backend": cfg.actor.backend,
        "reply": gen.texts[0],
        "error": gen.errors[0],
        "load_s": round(load_s, 2),
        "prompt_tokens": gen.prompt_tokens[0],
        "completion_tokens": tokens,
        "seconds": round(gen.seconds, 3),
        "tokens_per_s": round(tokens / gen.seconds, 1) if gen.seconds > 0 else None,
    }
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"[bold]{result['model']}[/bold] ({result['backend']}) loaded in {load_s:.1f} s")
        console.print(f"reply: {gen.texts[0]!r}", highlight=False)
        if gen.errors[0]:
            console.print(f"[red]error: {gen.errors[0]}[/red]", highlight=False)
        console.print(f"{tokens} tokens in {gen.seconds:.2f} s = {result['tokens_per_s']} tokens/s")
    if gen.errors[0]:
        raise typer.Exit(1)


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The model registry: every trained adapter, its stage, data set version, metrics, and which is promoted.

    Example: retro models list
    """
    from retro.store import Lake
    from retro.train.registry import list_model_versions

    print_frame(list_model_versions(Lake(settings()).require()), title="model versions", as_json=as_json)
