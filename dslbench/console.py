"""What dslbench's own commands print: progress bars, one line per finished cell, and the
warnings a user can act on; ``--verbose`` prints everything as the libraries make it.

Quiet (the default of ``dslbench demo / leaderboard / adapt / regress / report / trace``) holds
back, only inside :func:`console` and only what dslbench's own runs cause:

- records of the named third-party loggers in :data:`QUIET_LOGGERS` below their level (lm-eval's
  per-task notices, accelerate's and transformers' chatter); levels are restored on exit;
- the warnings matched by :data:`QUIET_WARNINGS` (category + message pattern), never a blanket
  ``simplefilter("ignore")``: dslbench's own warnings (truncation, an evaluator that is not
  GPT-2 large, partial report inputs) always pass;
- lines written straight to the process's stderr by C code or a subprocess (faiss's "clustering
  N points" under mauve-text; git's "not a git repository" when lm-eval records the commit of a
  run started outside a checkout), filtered by :func:`filtered_stderr` around the calls that
  cause them (MAUVE; a leaderboard cell's evaluation);
- third-party progress bars (lm-eval's per-task context building, the backends' per-request
  bars, transformers' weight loading and saving, mauve-text's featurizing): ``sys.stderr`` is
  wrapped in :class:`BarFilter`, which drops tqdm's redraws; the one bar per long phase is
  dslbench's own (a training run, the evaluation of the cells) and draws on :func:`bar_file`.

``lm_eval --model dsl_llada ...`` and ``dslbench eval`` never enter :func:`console`: lm-eval's
console is lm-eval's. The choice travels in ``DSLBENCH_VERBOSE`` so that Ray workers and
subprocesses started by a command print what the command prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Iterator

VERBOSE_ENV = "DSLBENCH_VERBOSE"
QUIET_ENV = "DSLBENCH_QUIET"  # set inside console(): what backends and metrics read

# logger -> the least level shown in quiet mode (records below it are notices, not faults)
QUIET_LOGGERS = {
    "lm_eval": logging.ERROR,  # "Building contexts ...", "Task: ...", chat-template and metadata notices
    "accelerate": logging.ERROR,
    "transformers": logging.ERROR,  # "You are using a model of type ...", generation-config notices
    "huggingface_hub": logging.ERROR,
    "datasets": logging.ERROR,
}
# (category, message regex): warnings raised inside dslbench's runs that nobody can act on
QUIET_WARNINGS = (
    (FutureWarning, r".*past_key_values"),  # transformers, at mauve-text's call style
    (UserWarning, r".*`do_sample` is set to `False`"),  # transformers' generation-config check
)
# lines a C library writes to fd 2 (kept when they do not match)
QUIET_STDERR = (
    re.compile(rb"^WARNING clustering \d+ points to \d+ centroids"),  # faiss, under mauve-text
    re.compile(rb"^fatal: not a git repository"),  # git, when lm-eval records the commit outside a checkout
)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet() -> bool:
    """True inside :func:`console` (and in workers it started) unless ``--verbose`` was given."""
    return os.environ.get(QUIET_ENV, "") not in ("", "0") and not verbose()


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class BarFilter:
    """A stand-in for ``sys.stderr`` that drops progress-bar output: tqdm redraws a bar with a
    write that begins with a carriage return, moves between nested bars with lone newlines and
    cursor-up codes, and ends a bar with a newline. A lone newline that ends no written text is
    held until the next write shows what it was (a moved bar: dropped); all else passes."""

    _CURSOR_UP = re.compile("(\x1b\\[A)+")

    def __init__(self, stream) -> None:
        self.stream = stream
        self._after_bar = False
        self._line_open = False  # the last line written has no line end yet (print writes it apart)
        self._held = ""

    def write(self, text: str) -> int:
        if not text:
            return 0
        if text.startswith("\r") or self._CURSOR_UP.fullmatch(text):
            self._held, self._after_bar = "", True
        elif text == "\n" and self._after_bar:
            self._after_bar = False
        elif text and text.strip("\n") == "" and not self._line_open:
            self._held += text
        else:
            self._after_bar = False
            self.stream.write(self._held + text)
            self._held, self._line_open = "", not text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close_held(self) -> None:
        if self._held:
            self.stream.write(self._held)
            self._held = ""
        self.stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding, buffer: the real stream's
        return getattr(self.stream, name)


def bar_file():
    """Where dslbench's own progress bars draw: the stream under :class:`BarFilter`, if any."""
    return sys.stderr.stream if isinstance(sys.stderr, BarFilter) else sys.stderr


@contextlib.contextmanager
def console(verbose_flag: bool = False) -> Iterator[None]:
    """The console of one dslbench command: quiet, or as the libraries make it (``verbose_flag``)."""
    if verbose_flag or verbose():
        with _env(VERBOSE_ENV, "1"):
            yield
        return
    loggers = {name: logging.getLogger(name) for name in QUIET_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    bars = BarFilter(sys.stderr)
    # transformers sets its level when first imported (after this, often): from this variable
    transformers_level = os.environ.get("TRANSFORMERS_VERBOSITY") or "error"
    with _env(QUIET_ENV, "1"), _env("TRANSFORMERS_VERBOSITY", transformers_level), warnings.catch_warnings(), \
            contextlib.redirect_stderr(bars):
        for category, pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        for name, logger in loggers.items():
            logger.setLevel(max(QUIET_LOGGERS[name], logger.getEffectiveLevel()))
        try:
            yield
        finally:
            bars.close_held()
            for name, logger in loggers.items():
                logger.setLevel(levels[name])


@contextlib.contextmanager
def filtered_stderr(patterns=QUIET_STDERR) -> Iterator[None]:
    """Around a call into a C library: the lines it writes to file descriptor 2 that match
    ``patterns`` are dropped, every other line is written back in order. A no-op when not quiet."""
    if not quiet():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not any(p.match(line) for p in patterns)]
            if kept:
                sys.stderr.buffer.write(b"".join(kept)) if hasattr(sys.stderr, "buffer") else sys.stderr.write(
                    b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()
