"""Smoke test of ``benchmarks/prompt_cache.py``: its tiny sub-mode runs end to end in-process and
writes its JSON (no thresholds: the figures of a seconds-long run on tiny models mean nothing)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prompt_cache.py"


def test_prompt_cache_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prompt_cache_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    out = tmp_path / "pc.json"
    try:
        assert bench.main(["--smoke", "--out", str(out)]) == 0
    finally:  # the script sets process-wide state meant for a standalone run
        torch.set_num_threads(threads)
        logging.disable(logging.NOTSET)
    res = json.loads(out.read_text())
    for row in res["speed"].values():
        assert row["nfe_off"] == row["nfe_on"] and row["speedup"] > 0
        assert row["full_calls"] + row["cached_calls"] == row["nfe_on"]
    assert set(res["quality"]) == {"mdm_llada", "softmask_llada", "dsl_llada"}
    for q in res["quality"].values():
        assert q["off"]["agree"] == 1.0 and 0.0 <= q["on"]["agree"] <= 1.0
        assert q["off"]["nfe"] == q["on"]["nfe"]
    assert "| dsl_llada | on |" in capsys.readouterr().out
