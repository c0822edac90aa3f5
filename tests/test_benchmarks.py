"""Smoke test of the performance benchmark: ``benchmarks/run.py`` runs end to end in a tiny
sub-mode and writes its JSON (no performance thresholds are asserted: CI machines vary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    for backend in ("mdm_llada", "softmask_llada", "dsl_llada"):
        assert res[f"sampler_overhead.{backend}.b{res['sizes']['overhead_batch']}"] > 0
        for b in res["sizes"]["batches"]:
            assert res["sampler"]["scaling"][f"{backend}.b{b}"] > 0
        assert f"generate.{backend}.b{res['sizes']['overhead_batch']}" in res["memory"]
        assert res[f"sampler_overhead_summarization.{backend}.b{res['sizes']['overhead_batch']}"] > 0
    assert res["sampler_summarization"]["prompt_len"] == res["sizes"]["summ_prompt_len"]
    assert 0 < res["converter"]["share_flops"] < 1 and "topk64" in res["converter"]
    assert 0 < res["converter"]["posterior_top512"]["share_flops"] < 1
    assert res["e2e"]["samples"] > 0 and 0 <= res["e2e"]["warm"]["share_outside_backend"] <= 1
    assert res["adaptation"]["dsl_over_mdm"] > 0 and res["adaptation"]["softmask_over_mdm"] > 0
    assert {"train.mdm", "train.dsl", "train.softmask"} <= set(res["memory"])
    assert "| dsl_llada |" in proc.stdout
    dg = res["sampler_diffusiongemma"]
    for key in ("diffusiongemma", "diffusiongemma+accepted"):
        assert res[f"sampler_overhead.{key}.b{dg['batch']}"] > 1 and dg["nfe"] == res["sizes"]["nfe"]
    assert "diffusiongemma (entropy-bound loop" in proc.stdout and "draw=accepted" in proc.stdout
    for case in res["mdlm"]["cases"].values():  # the exact cache: the release's tokens and calls
        assert case["same_tokens.batch"] and case["calls.batch"] == case["calls.released"]
        assert case["rows.row"] <= case["rows.batch"] and case["seconds.batch"] > 0
    assert "MDLM ddpm_cache sampler vs the released loop" in proc.stdout
