"""One ``samples_<task>_<date>.jsonl`` file -> per-sample rows (see :mod:`dslbench.report.load`).

Pooled ``(num, den)`` pairs become a per-sample ratio plus ``_num`` / ``_den`` columns; values that
are not per-sample numbers (open-ended n-gram lists, MAUVE's record, nulls) are left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dslbench.metrics.sample_stats import split_stats
from dslbench.report.errors import ReportInputError

# per-passage means (as published), then the same counts pooled over positions
REPAIR_METRICS: tuple[str, ...] = ("fix_rate", "preserve_rate", "word_fix_rate", "word_preserve_rate",
                                   "fix_rate_pooled", "preserve_rate_pooled", "word_fix_rate_pooled",
                                   "word_preserve_rate_pooled")
PERCENT_PAIRS = frozenset(REPAIR_METRICS)  # pooled (hits, total) metrics reported in percent
# whole-set metrics whose per-sample value is not a number (n-gram lists, MAUVE's text record)
SET_ONLY_METRICS = frozenset({"d2", "d3", "mauve"})
# per-sample genppl is the text's mean token NLL, not a perplexity: named for what it is
SAMPLE_RENAME = {"genppl": "genppl_nll"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sample_value(metric: str, value: Any) -> dict[str, float]:
    if metric in SET_ONLY_METRICS:
        return {}
    metric = SAMPLE_RENAME.get(metric, metric)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        num, den = float(value[0]), float(value[1])
        scale = 100.0 if metric in PERCENT_PAIRS else 1.0
        ratio = scale * num / den if den else math.nan
        return {metric: ratio, f"{metric}_num": num, f"{metric}_den": den}
    if isinstance(value, bool):
        return {metric: float(value)}
    if isinstance(value, (int, float)):
        return {metric: float(value)}
    return {}


def read_samples(path: Path, ids: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ReportInputError(f"{path}: unreadable lm-eval samples file ({err})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            names = rec["metrics"]
            doc_id = rec["doc_id"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ReportInputError(f"{path}:{lineno}: not an lm-eval logged sample ({err})") from None
        doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
        key = doc.get("id", rec.get("doc_hash", doc_id))
        row: dict[str, Any] = {**ids, "doc_id": int(doc_id), "doc_key": str(key)}
        for name in names:
            if name in rec:
                row.update(_sample_value(name, rec[name]))
        resp = rec.get("filtered_resps") or rec.get("resps") or [""]
        while isinstance(resp, list):
            resp = resp[0] if resp else ""
        row["response"], stats = split_stats(str(resp))
        if stats and "repair_protocol" in stats:
            row["repair_protocol"] = str(stats["repair_protocol"])
        if stats and stats.get("ppl_model"):
            row["ppl_model"] = str(stats["ppl_model"])
        rows.append(row)
    return rows


def repair_protocol_of(rows: list[dict[str, Any]]) -> str:
    """The repair protocol of a cell, read off its per-sample records (``unrecorded`` for records
    written before the protocol was recorded; several protocols joined by ``|``)."""
    found = sorted({r.get("repair_protocol") or "unrecorded" for r in rows})
    return "|".join(found)


def ppl_model_of(rows: list[dict[str, Any]]) -> str:
    """The GenPPL evaluator of an open-ended cell, read off its records (``""`` when none says)."""
    return "|".join(sorted({r["ppl_model"] for r in rows if r.get("ppl_model")}))
