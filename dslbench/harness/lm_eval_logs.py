"""Quiet lm-eval's own chatter inside dslbench's commands (never by patching lm-eval).

lm-eval logs a notice for every task whose dataset comes from a ``custom_dataset`` function
(``Custom kwargs can be passed to --metadata ... For example --metadata='{"max_seq_lengths":...}'``),
once per task per cell: a leaderboard or the demo repeats it dozens of times, and the example it
gives is another task family's. :func:`quiet_lm_eval` attaches a filter for that one message to
the logger that emits it (``lm_eval.api.task``); every other record passes, warnings included.
The ``dslbench`` commands no longer install it: :mod:`dslbench.console` quiets lm-eval's notices
with the rest of the third-party chatter for the length of a command (``--verbose`` shows them);
it stays for callers that want only this notice gone. ``lm_eval`` and ``dslbench eval`` keep
lm-eval's output as lm-eval makes it.
"""

from __future__ import annotations

import logging

LM_EVAL_TASK_LOGGER = "lm_eval.api.task"
_NOTICES = ("Custom kwargs can be passed to `--metadata`",)


class LmEvalNoticeFilter(logging.Filter):
    """Drops lm-eval's generic usage notices (:data:`_NOTICES`); passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in _NOTICES)


def quiet_lm_eval() -> LmEvalNoticeFilter:
    """Install the filter on lm-eval's task logger (once per process); returns it."""
    logger = logging.getLogger(LM_EVAL_TASK_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, LmEvalNoticeFilter):
            return existing
    quiet = LmEvalNoticeFilter()
    logger.addFilter(quiet)
    return quiet
