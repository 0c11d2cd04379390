"""Parsing what a small model writes: it will write junk, and junk is an invalid step, never a crash.

Only the actor's own format is read here (one line, maybe with a repeated `Action 3:` label); what the
line means as an action is the environment's business (`Environment.parse_action`).
"""

from __future__ import annotations

import re

STEP_LABEL_RE = re.compile(r"^\s*(?:thought|action|observation)\s*\d*\s*:\s*", re.IGNORECASE)


def clean_line(text: str) -> str:
    """First line of a completion, without a leading 'Thought 3:' style label the model repeated."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    return STEP_LABEL_RE.sub("", line).strip()
