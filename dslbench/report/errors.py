"""The report's input errors (own module: the loader and the samples reader both raise them)."""

from __future__ import annotations


class ReportInputError(ValueError):
    """An input that cannot be reported on; the message names the file."""


class ReportWarning(UserWarning):
    """A partial input: skipped or reported incompletely; the message names the file."""
