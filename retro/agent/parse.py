"""Parsing what a small model writes: it will write junk, and junk is an invalid step, never a crash."""

from __future__ import annotations

import re

# Name[argument]: the first bracketed action in the text; the argument may not contain "]".
ACTION_RE = re.compile(r"([A-Za-z_]\w{0,30})\s*\[([^\[\]\n]*)\]")
STEP_LABEL_RE = re.compile(r"^\s*(?:thought|action|observation)\s*\d*\s*:\s*", re.IGNORECASE)


def clean_line(text: str) -> str:
    """First line of a completion, without a leading 'Thought 3:' style label the model repeated."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    return STEP_LABEL_RE.sub("", line).strip()


def parse_action(text: str) -> str | None:
    """The action `Name[argument]` in a completion, normalised; None when there is none."""
    match = ACTION_RE.search(clean_line(text))
    if match is None:
        return None
    name = match.group(1).strip()
    return f"{name}[{match.group(2).strip()}]"
