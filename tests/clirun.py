"""Run `retro ...` in the test process through the real entry point, `retro.cli.main`.

Faster than a subprocess and the same code path: a RetroError prints one red line and exits 1; any
other exception propagates, so a traceback a user would see fails the test.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def one_line_error(self) -> str:
        """The error line, asserting there is exactly one and the exit code is 1."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert self.code == 1, f"exit code {self.code}; stdout: {self.out!r}; stderr: {self.err!r}"
        assert len(errors) == 1 and "Traceback" not in self.err, self.err
        return errors[0]


def retro(*args: str) -> Result:
    from retro.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, code = sys.argv, 0
    sys.argv = ["retro", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())
