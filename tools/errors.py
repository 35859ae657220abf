"""Errors a user can act on.

Every error the product raises for bad input says what is wrong, where, and what to do, so the
CLI can print it on one line and exit with code 2 instead of a traceback.
"""

from __future__ import annotations


class HarmonyCellError(Exception):
    """Base class for errors caused by the user's input or environment (CLI exit code 2)."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(self.fix)
        return " -- ".join(parts)


class InputError(HarmonyCellError):
    """An input file or value is missing, unreadable or not what it claims to be."""


class SpecError(HarmonyCellError):
    """A mapping specification or expression is invalid or does not fit the data."""


class SandboxError(HarmonyCellError):
    """The sandbox cannot run (no engine, no image, GPU requested where none exists)."""


class PredictionError(HarmonyCellError):
    """Predictions written by the sandbox do not fit the task (shape, order, NaN/inf)."""


class TranscriptError(HarmonyCellError):
    """A transcript record or artifact fails verification."""
