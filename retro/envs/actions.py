"""Action text of the `Name[argument]` form, which HotPotQA and WebShop use (ReAct's notation).

Each environment parses its own actions (ALFWorld's are plain commands such as `go to desk 1`); this is
the shared parser of the bracket form, and a mixin that gives an environment it.
"""

from __future__ import annotations

import re

from retro.envs.base import ActionSpace

# Name[argument]: the first bracketed action in the text; the argument may not contain "]".
ACTION_RE = re.compile(r"([A-Za-z_]\w{0,30})\s*\[([^\[\]\n]*)\]")
INVALID_BRACKET = "Invalid action: write exactly one action of the form Name[argument]."


def bracket_action(text: str) -> str | None:
    """The first `Name[argument]` on the first non-empty line, spaces trimmed; None when there is none."""
    line = text.strip().split("\n", 1)[0]
    match = ACTION_RE.search(line)
    if match is None:
        return None
    return f"{match.group(1).strip()}[{match.group(2).strip()}]"


def bracket_forms(*names: str) -> ActionSpace:
    """`Name[<text>]` for each name, as `bracket_action` reads them back: no bracket inside the text."""
    return ActionSpace(forms=tuple((f"{name}[", "]") for name in names), text_excludes="[]")


def bracket_choices(name: str, arguments: list[str]) -> ActionSpace:
    """`name[argument]` for each argument that `bracket_action` reads back as written (no bracket, no
    newline, no spaces around it), once each."""
    actions = (f"{name}[{argument}]" for argument in arguments)
    return ActionSpace(choices=tuple(dict.fromkeys(a for a in actions if bracket_action(a) == a)))


class BracketActions:
    """For an environment whose actions are `Name[argument]`: its parser and its invalid-action text
    (override `invalid_action` to name the environment's own actions)."""

    invalid_action = INVALID_BRACKET

    def parse_action(self, text: str) -> str | None:
        return bracket_action(text)
