"""The action line decoded within the actions that exist: an ActionSpace as a grammar for the engine.

The grammar is llama.cpp's GBNF, which xgrammar (vLLM's structured outputs) and llguidance read as well. It
holds the completion after the prefilled `Action n:`: one optional space, then one whole action (a choice),
or a form's prefix, its text and its suffix. A form's text is one line with at least one letter or digit
and none of the suffix's characters or the space's `text_excludes` (retro.envs.base.ActionSpace). `allows`
is the same language as a regular expression: the runner tells by it a server that ignored the grammar.

Written in the subset that llama.cpp, xgrammar and llguidance all read alike: rule names of letters and
digits, alternatives on one line, characters as they are but quotes, backslashes, `]` and line breaks
(escaped) and other control characters: `\\xHH`, never followed by a hex digit (xgrammar reads `\\x` with
any number of them; llguidance's GBNF reader drops the zeros of `\\u000A`, so no `\\u`).
"""

from __future__ import annotations

import re
import string
import unicodedata

from retro.envs.base import ActionSpace
from retro.errors import ConfigError

WORD = string.digits + string.ascii_uppercase + string.ascii_lowercase  # a form's text holds one of these
LINE_ENDS = "\n\r"
ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class ConstraintIgnoredError(ConfigError):
    """The actor answered outside the actions its request constrained it to: the server ignores grammars."""


def action_grammar(space: ActionSpace) -> str:
    """The GBNF grammar of one action line in `space` (which must not be empty)."""
    if space.empty:
        raise ValueError("no action exists at this step: an empty space has no grammar (the runner ends the trial)")
    alternatives = [literal(choice) for choice in dict.fromkeys(space.choices)]
    rules = []
    for i, (prefix, suffix) in enumerate(dict.fromkeys(space.forms)):
        outside = _outside(space, suffix)
        word = "".join(c for c in WORD if c not in outside)
        # no letter or digit, then one, then anything: one way to read each text, so no parser backtracks
        rules.append(f"text{i} ::= {_class(outside + word, True)}* {_class(word)} {_class(outside, True)}*")
        alternatives.append(" ".join(part for part in (literal(prefix), f"text{i}", literal(suffix)) if part != '""'))
    return "\n".join(['root ::= " "? action', "action ::= " + " | ".join(alternatives), *rules]) + "\n"


def allows(space: ActionSpace, text: str) -> bool:
    """Whether `text` (a completion of the action line) is in the grammar's language."""
    alternatives = [re.escape(choice) for choice in space.choices]
    for prefix, suffix in space.forms:
        outside = _outside(space, suffix)
        word = "".join(re.escape(c) for c in WORD if c not in outside)
        plain = "".join(re.escape(c) for c in outside)
        alternatives.append(f"{re.escape(prefix)}[^{plain}{word}]*[{word}][^{plain}]*{re.escape(suffix)}")
    return bool(alternatives) and re.fullmatch(f" ?(?:{'|'.join(alternatives)})", text) is not None


def literal(text: str) -> str:
    """`text` as GBNF string literals: quotes, backslashes and line breaks escaped, other control characters as
    `\\xHH` closing their literal (so no hex digit follows one), every other character as it is."""
    pieces, piece = [], ""
    for c in text:
        if unicodedata.category(c) == "Cc" and c not in ESCAPES:
            pieces.append(piece + _hex(c))
            piece = ""
        else:
            piece += ESCAPES.get(c, c)
    return " ".join(f'"{p}"' for p in [*pieces, piece] if p) or '""'


def _outside(space: ActionSpace, suffix: str) -> str:
    """The characters a form's text may not hold."""
    return "".join(dict.fromkeys(LINE_ENDS + suffix + space.text_excludes))


def _class(chars: str, negated: bool = False) -> str:
    """A character class of exactly these characters: letters and digits as ranges, then the others as they
    are (`]`, backslash and line breaks escaped), control characters as `\\xHH`, `^` and `-` last: where no
    parser reads them as syntax, and no hex digit follows a code."""
    word = sorted(c for c in chars if c in WORD)
    codes = [_hex(c) for c in chars if unicodedata.category(c) == "Cc" and c not in ESCAPES]
    last = [c for c in "^-" if c in chars]
    other = [ESCAPES.get(c, "\\]" if c == "]" else c) for c in chars
             if c not in WORD and c not in "^-" and (c in ESCAPES or unicodedata.category(c) != "Cc")]
    return "[" + ("^" if negated else "") + _ranges(word) + "".join(other) + "".join(codes) + "".join(last) + "]"


def _hex(char: str) -> str:
    return f"\\x{ord(char):02X}"  # control characters are all below 0xA0


def _ranges(chars: list[str]) -> str:
    """Sorted letters and digits with runs of three or more as ranges: `0-9A-Za-z`."""
    out, i = [], 0
    while i < len(chars):
        j = i
        while j + 1 < len(chars) and ord(chars[j + 1]) == ord(chars[j]) + 1:
            j += 1
        out.append(f"{chars[i]}-{chars[j]}" if j - i >= 2 else "".join(chars[i:j + 1]))
        i = j + 1
    return "".join(out)
