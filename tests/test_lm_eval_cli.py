"""The issue's acceptance path through the real ``lm_eval`` command, single and data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dslbench.metrics.sample_stats import split_stats
from tests.shared_data import SHARED_DATA, needs

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
LIMIT = 5
STOCHASTIC = ",temperature=0.8"


def _lm_eval(cmd: list[str], out: Path, ckpt: Path, extra_args: str = "") -> tuple[dict, list[dict]]:
    args = [
        "--model", "mdm_llada", "--model_args", f"pretrained={ckpt}{extra_args}",
        "--tasks", "dsl_summ_synth_16step", "--limit", str(LIMIT), "--output_path", str(out), "--log_samples",
    ]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, env=ENV, cwd=out.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "rouge1" in proc.stdout  # lm-eval printed its results table
    (results,) = out.rglob("results_*.json")
    (samples,) = out.rglob("samples_dsl_summ_synth_16step_*.jsonl")
    return json.loads(results.read_text()), [json.loads(line) for line in samples.read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tiny_ckpt, tmp_path_factory):
    # a sampler with random draws (Gumbel noise): data parallel and batching must not change them,
    # since every document draws from its own seed (issue "honest numbers", same seed same sample)
    return _lm_eval([sys.executable, "-m", "lm_eval"], tmp_path_factory.mktemp("single") / "out", tiny_ckpt,
                    STOCHASTIC)


def test_plain_lm_eval_reports_rouge_and_measured_nfe(single):
    results, samples = single
    metrics = results["results"]["dsl_summ_synth_16step"]
    for key in ("rouge1,none", "rouge2,none", "rougeL,none", "nfe,none", "gen_tokens,none", "tokens_per_forward,none"):
        assert key in metrics
    assert len(samples) == LIMIT
    for s in samples:
        text, stats = split_stats(s["resps"][0][0])
        assert stats is not None and stats["nfe"] <= 16 and stats["nfe"] == s["nfe"]
        assert (stats["rank"], stats["world_size"]) == (0, 1)
    assert metrics["nfe,none"] == 16


def test_dslbench_eval_is_the_explicit_equivalent(single, tiny_ckpt, tmp_path):
    _, samples = _lm_eval([sys.executable, "-m", "dslbench.cli", "eval"], tmp_path / "out", tiny_ckpt, STOCHASTIC)
    assert [s["resps"] for s in samples] == [s["resps"] for s in single[1]] or [
        split_stats(s["resps"][0][0])[0] for s in samples
    ] == [split_stats(s["resps"][0][0])[0] for s in single[1]]


def _free_port() -> int:
    # a fixed port collides with any other run on the machine
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    # the two launchers the README gives for CPU; nothing tells them it is a CPU machine
    "torchrun": lambda: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": lambda: [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--main_process_port", str(_free_port())],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_cpu_processes_split_the_documents_and_give_the_same_outputs(single, tiny_ckpt, tmp_path, launcher):
    env = {k: v for k, v in ENV.items() if k != "ACCELERATE_USE_CPU"}
    cmd = [*LAUNCHERS[launcher](), "-m", "lm_eval"]
    # batch 2 per rank against batch 1 in one process: the same text per document all the same
    args = ["--model", "mdm_llada", "--model_args", f"pretrained={tiny_ckpt}{STOCHASTIC},batch_size=2",
            "--tasks", "dsl_summ_synth_16step",
            "--limit", str(LIMIT), "--output_path", str(tmp_path / "out"), "--log_samples"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    (samples_file,) = (tmp_path / "out").rglob("samples_dsl_summ_synth_16step_*.jsonl")
    results = json.loads(results.read_text())
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    stats = {s["doc_id"]: split_stats(s["resps"][0][0]) for s in samples}
    # the same text per document as one process (per-document seeds)
    assert {d: text for d, (text, _) in stats.items()} == {s["doc_id"]: split_stats(s["resps"][0][0])[0] for s in single[1]}
    # each rank decoded its share (documents 0, 2, 4 and 1, 3), and says so in the record
    assert {d: (st["rank"], st["world_size"]) for d, (_, st) in stats.items()} == {d: (d % 2, 2) for d in range(LIMIT)}
    # 5 documents over 2 ranks: one rank was padded with a duplicate, which must not count.
    assert results["n-samples"]["dsl_summ_synth_16step"]["effective"] == LIMIT
    assert all(s["nfe"] == 16 for s in samples)


@needs(SHARED_DATA)
def test_real_data_summarization_and_repair_in_one_run(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "mdm_llada", "--model_args", f"pretrained={tiny_ckpt}",
        "--tasks", "dsl_summ_xsum_16step,dsl_repair_random_10", "--limit", "5",
        "--log_samples", "--output_path", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**ENV, "DSLBENCH_DATA_DIR": str(SHARED_DATA)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results,) = out.rglob("results_*.json")
    res = json.loads(results.read_text())["results"]
    summ, rep = res["dsl_summ_xsum_16step"], res["dsl_repair_random_10"]
    for key in ("rouge1", "rouge2", "rougeL", "words", "length_ratio", "seq_rep_2", "adjacent_rep",
                "degenerate", "short_output", "nfe", "tokens_per_forward"):
        assert f"{key},none" in summ, key
    assert summ["nfe,none"] <= 16
    for key in ("fix_rate", "preserve_rate", "word_fix_rate", "word_preserve_rate"):
        assert 0 <= rep[f"{key},none"] <= 100
