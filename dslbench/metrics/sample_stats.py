"""Per-sample efficiency records carried from a backend to the task's metrics.

lm-eval hands a backend's generations to the task as plain strings, so a backend that was asked
for them (generation kwarg ``return_stats: true``, set by dslbench's own tasks) appends one
marker line with a JSON record: measured NFE, generated tokens, seconds. The task's
``process_results`` splits it off before scoring, and since lm-eval logs raw responses, the
record also lands in the ``--log_samples`` files where reports read it back. Tasks that did not
ask get the bare text.
"""

from __future__ import annotations

import json

MARKER = "\n\x1edslbench-stats:"


def attach_stats(text: str, stats: dict) -> str:
    return text + MARKER + json.dumps(stats, sort_keys=True)


def split_stats(response: str) -> tuple[str, dict | None]:
    """``(text, stats)``; ``stats`` is None when the response carries no record."""
    head, sep, tail = response.rpartition(MARKER)
    if not sep:
        return response, None
    return head, json.loads(tail)
