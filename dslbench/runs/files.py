"""The files a run writes and a report reads: their names and the trace's JSON schema.

With :mod:`dslbench.runs.effective` (which reads what a cell ran back from lm-eval's files), the
only module of ``runs/`` that ``report/`` imports: it holds data, imports nothing of dslbench
beyond ``fsio``, so reading a result never pulls in a backend, a sampler or a model.

- ``cell.json``: a leaderboard cell's identity, written by :mod:`dslbench.runs.matrix`, plus its
  ``effective`` block (what ran: a task's values over the model args, ``--limit``), written after
  the evaluation and no part of the identity that resume compares;
- ``trace.json``: a denoising trace (:class:`BackendTrace` rows per backend), written by
  :mod:`dslbench.runs.trace` and rendered by :mod:`dslbench.report.trace`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dslbench import fsio

CELL_INFO = "cell.json"  # written by the leaderboard runner: {"name", "backend", "model_args", ...}
OUTPUT_MARK = "<output>"  # a path inside the output folder, in a cell's identity
TRACE_JSON = "trace.json"
MASK_GLYPH = "\u00b7"  # placeholder shown for a still-masked position


@dataclass
class TraceRow:
    step: int  # row index (the DSL final pass is the last row)
    kind: str  # "mdm", "heun", "euler" or "final"
    nfe: int  # denoiser calls made up to and including this row
    tokens: list[int]  # the generated span as this row shows it
    masked: list[bool]  # still masked after the step (masked diffusion); all False for DSL
    score: list[float | None]  # confidence per position (None where masked)
    new: list[bool]  # committed at this step (MDM) / argmax changed since the previous row (DSL)
    remasked: list[bool] = field(default_factory=list)  # sent back to the mask (ReMDM)
    lam: list[float | None] | None = None  # soft-mask lambda fed at this step (masked positions)
    proposal: list[int | None] | None = None  # MDM: argmax proposal at still-masked positions
    proposal_prob: list[float | None] | None = None
    nearest: list[int] | None = None  # DSL: token nearest to the state after the step
    snr: float | None = None  # DSL: SNR of the row's (first) evaluation
    snr_next: float | None = None  # DSL: SNR the step moves to

    @property
    def committed_count(self) -> int:
        return sum(self.new) if self.kind == "mdm" else 0


@dataclass
class BackendTrace:
    backend: str
    model_args: str
    rows: list[TraceRow]
    final_tokens: list[int]  # the sampler's output span
    text: str  # what the backend's generate_until returns for this prompt
    nfe: int  # measured denoiser calls
    steps: int
    nfe_budget: int
    gen_length: int
    mask_id: int
    eos_ids: tuple[int, ...]
    token_text: dict[int, str]  # display string of every token id that appears
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return "dsl" if self.backend == "dsl_llada" else "mdm"


def trace_payload(traces: list[BackendTrace], prompt: str) -> dict[str, Any]:
    """The JSON document of ``trace.json`` (token ids as string keys, as JSON requires)."""
    return {
        "prompt": prompt,
        "backends": [
            {**{k: v for k, v in asdict(t).items() if k not in ("rows", "token_text")},
             "token_text": {str(k): v for k, v in t.token_text.items()},
             "rows": [asdict(r) for r in t.rows]}
            for t in traces
        ],
    }


def write_trace_json(traces: list[BackendTrace], out_dir: str | os.PathLike, prompt: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(trace_payload(traces, prompt), indent=1, ensure_ascii=False) + "\n"
    return fsio.write_text_atomic(text, out / TRACE_JSON)


def read_trace_json(path: str | os.PathLike) -> tuple[list[BackendTrace], str]:
    """``(traces, prompt)`` back from a ``trace.json`` (a clear error naming the file when it is not one)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        traces = []
        for b in doc["backends"]:
            rows = [TraceRow(**r) for r in b["rows"]]
            fields = {k: v for k, v in b.items() if k not in ("rows", "token_text", "eos_ids")}
            traces.append(BackendTrace(**fields, rows=rows, eos_ids=tuple(b["eos_ids"]),
                                       token_text={int(k): v for k, v in b["token_text"].items()}))
        return traces, doc["prompt"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a dslbench trace file ({type(err).__name__}: {err})") from None
