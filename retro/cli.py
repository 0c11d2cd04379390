"""The `retro` command. Known errors (RetroError) print one red line and exit 1; anything else keeps
its traceback, without local variables (prompts and keys stay out of the terminal)."""

from __future__ import annotations

import logging
import sys

import typer
from typer._click.exceptions import NoArgsIsHelpError  # the class typer raises; typer is pinned

from retro.commands import lake as lake_cmd
from retro.commands.common import err_console, error_line
from retro.config import load_settings
from retro.errors import RetroError

app = typer.Typer(
    help="Retroformer: retrospective LLM agents improved by policy gradient, as a nightly pipeline.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _settings_first() -> None:
    """Every command reads the settings: a broken retro.toml or RETRO_* variable ends it here, as one line
    naming the file or variable, before any command could print a table of per-item errors instead."""
    if "--help" not in sys.argv[1:]:  # help stays readable (typer clears the args before this runs)
        load_settings()


app.command(name="sql")(lake_cmd.sql)
app.add_typer(lake_cmd.app, name="lake")


def _register_optional_groups() -> None:
    """Command groups of other areas; each module defines `app` (a group) or `register(app)`."""
    import importlib

    for module_name in ("models", "envs", "agent", "train", "flows", "report", "demo"):
        try:
            module = importlib.import_module(f"retro.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"retro.commands.{module_name}":
                continue
            raise
        module.register(app)


_register_optional_groups()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("retro").setLevel(logging.INFO)
    try:
        app(standalone_mode=False)
    except RetroError as err:
        err_console.print(error_line(str(err)), soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.TyperException as err:  # a bad option or argument (typer's own click) arrives here
        if isinstance(err, NoArgsIsHelpError):  # `retro lake` alone: the help is the answer
            err.show()
            sys.exit(0)
        err_console.print(error_line(usage_error_line(err)), soft_wrap=True)
        sys.exit(getattr(err, "exit_code", 2))


def usage_error_line(err: typer.TyperException) -> str:
    """One line for a usage error: what is wrong with which option, and the help that lists the valid ones."""
    text = err.format_message() if hasattr(err, "format_message") else str(err)
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    ctx = getattr(err, "ctx", None)
    return f"{line} (see `{ctx.command_path} --help`)" if ctx is not None else line
