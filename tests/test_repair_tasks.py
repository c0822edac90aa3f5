"""The repair tasks through lm-eval, for every token-space backend, on tiny checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dslbench.paths import tasks_dir
from tests.shared_data import SHARED_DATA, needs

SHARED_REPAIR = SHARED_DATA / "repair"
MODES = ("random", "semantic")
RATES = (10, 30, 50)


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=str(tasks_dir()))


def test_every_repair_task_and_group_is_listed(task_manager):
    names = set(task_manager.all_tasks)
    for prefix in ("dsl_repair", "dsl_repair_synth"):
        assert prefix in names
        for mode in MODES:
            for rate in RATES:
                assert f"{prefix}_{mode}_{rate}" in names


def _evaluate(ckpt, tasks, task_manager, limit=3, backend="mdm_llada"):
    import lm_eval

    return lm_eval.simple_evaluate(
        model=backend, model_args={"pretrained": str(ckpt)}, tasks=tasks, limit=limit,
        log_samples=True, task_manager=task_manager, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
    )


def test_synthetic_repair_reports_pooled_rates_and_one_forward(tiny_ckpt, task_manager):
    out = _evaluate(tiny_ckpt, ["dsl_repair_synth_random_30", "dsl_repair_synth_semantic_10"], task_manager)
    for task in ("dsl_repair_synth_random_30", "dsl_repair_synth_semantic_10"):
        m = out["results"][task]
        for key in ("fix_rate", "preserve_rate", "word_fix_rate", "word_preserve_rate"):
            assert 0.0 <= m[f"{key},none"] <= 100.0
        assert m["nfe,none"] == 1.0  # the published one-forward probe
        for s in out["samples"][task]:
            n_fixed, n_corrupted = s["fix_rate"]
            assert n_corrupted > 0 and 0 <= n_fixed <= n_corrupted


def test_corruption_is_identical_across_runs(tiny_ckpt, task_manager):
    from dslbench.metrics.sample_stats import split_stats

    runs = [_evaluate(tiny_ckpt, ["dsl_repair_synth_random_10"], task_manager, limit=2) for _ in range(2)]
    records = [[split_stats(s["resps"][0][0])[1] for s in r["samples"]["dsl_repair_synth_random_10"]] for r in runs]
    assert [(r["corrupted_ids"], r["corrupted_positions"]) for r in records[0]] == [
        (r["corrupted_ids"], r["corrupted_positions"]) for r in records[1]
    ]


@needs(SHARED_REPAIR)
def test_wikitext_repair_reads_the_published_passages(tiny_ckpt, task_manager, monkeypatch):
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(SHARED_REPAIR))
    out = _evaluate(tiny_ckpt, ["dsl_repair_random_10"], task_manager, limit=2)
    samples = out["samples"]["dsl_repair_random_10"]
    assert samples[0]["doc"]["text"].startswith("Robert Boulter is an English film")
    assert out["results"]["dsl_repair_random_10"]["nfe,none"] == 1.0


def test_wikitext_without_local_file_offline_names_the_file(monkeypatch, tmp_path):
    from dslbench.data.repair import load_passages

    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="wikitext_100.jsonl not found.*DSLBENCH_DATA_DIR"):
        load_passages("wikitext", n_docs=2)


def test_bad_local_file_names_file_and_line(monkeypatch, tmp_path):
    from dslbench.data.jsonl import DataFormatError
    from dslbench.data.repair import load_passages

    (tmp_path / "wikitext_100.jsonl").write_text('{"id": 0, "text": "fine"}\n{"id": 1}\n')
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(DataFormatError, match=r"wikitext_100.jsonl, line 2: missing field .text."):
        load_passages("wikitext")


def test_data_dir_may_be_a_parent_folder_or_a_list(monkeypatch, tmp_path):
    from dslbench.data.jsonl import DataFormatError, local_data_file

    (tmp_path / "summ").mkdir()
    (tmp_path / "rep").mkdir()
    (tmp_path / "summ" / "xsum.jsonl").write_text("{}\n")
    (tmp_path / "rep" / "wikitext_100.jsonl").write_text("{}\n")
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(tmp_path))
    assert local_data_file("xsum.jsonl") == tmp_path / "summ" / "xsum.jsonl"
    assert local_data_file("wikitext_100.jsonl") == tmp_path / "rep" / "wikitext_100.jsonl"
    assert local_data_file("cnndm.jsonl") is None
    monkeypatch.setenv("DSLBENCH_DATA_DIR", os.pathsep.join([str(tmp_path / "rep"), str(tmp_path / "summ")]))
    assert local_data_file("xsum.jsonl") == tmp_path / "summ" / "xsum.jsonl"
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataFormatError, match="nope is not a directory"):
        local_data_file("xsum.jsonl")


def test_corruption_is_identical_across_backends(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA
    from dslbench.metrics.sample_stats import split_stats

    class Req:
        def __init__(self, text):
            self.args = (text, {"repair_mode": "semantic", "repair_rate": 0.3, "repair_seed": 9, "return_stats": True})
            self.repeats = 1

    reqs = [Req("alice larsen visited a red boat in oslo on monday."), Req("the museum announced new opening hours.")]
    records = []
    for cls in (MDMLLaDA, SoftMaskLLaDA):
        backend = cls.create_from_arg_string(f"pretrained={tiny_ckpt},batch_size=2")
        records.append([split_stats(r)[1] for r in backend.generate_until(reqs)])
    for a, b in zip(*records):
        assert a["corrupted_ids"] == b["corrupted_ids"] and a["corrupted_positions"] == b["corrupted_positions"]
        assert a["original_ids"] == b["original_ids"]


PASSAGES = ["alice larsen visited a red boat in oslo on monday.", "the museum announced new opening hours for the summer season."]


def one_forward_argmax(model, ids: list[int]) -> list[int]:
    """The published repair protocol, computed here: one forward on the corrupted ids, argmax."""
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].argmax(dim=-1).tolist()


def repair_records(backend, mode="random", rate=0.3, **extra):
    from dslbench.metrics.sample_stats import split_stats

    class Req:
        def __init__(self, text):
            self.args = (text, {"repair_mode": mode, "repair_rate": rate, "repair_seed": 3, "return_stats": True, **extra})
            self.repeats = 1

    return [split_stats(r)[1] for r in backend.generate_until([Req(p) for p in PASSAGES])]


@pytest.mark.parametrize("backend_name", ["mdm_llada", "softmask_llada"])
@pytest.mark.parametrize("mode", MODES)
def test_token_path_repair_is_one_forward_and_argmax(tiny_ckpt, backend_name, mode):
    from lm_eval.api.registry import get_model

    backend = get_model(backend_name).create_from_arg_string(f"pretrained={tiny_ckpt},batch_size=2")
    for passage, rec in zip(PASSAGES, repair_records(backend, mode)):
        # the passage's own tokens, no BOS in front; max(1, int(n * r)) of them corrupted
        assert rec["original_ids"] == backend.tokenizer(passage, add_special_tokens=False)["input_ids"]
        assert len(rec["corrupted_positions"]) == max(1, int(len(rec["original_ids"]) * 0.3))
        assert rec["repaired_ids"] == one_forward_argmax(backend.model, rec["corrupted_ids"])
        assert rec["repair_protocol"] == "published" and rec["nfe"] == 1


def test_more_passes_are_a_named_variant(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA

    backend = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}")
    rec = repair_records(backend, repair_nfe=3)[0]
    assert rec["repair_protocol"] == "iterative-3" and rec["nfe"] == 3 and rec["repair_passes"] == 3


def test_an_empty_passage_is_a_clear_error(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA

    class Req:
        args = ("", {"repair_mode": "random", "repair_rate": 0.1})
        repeats = 1

    with pytest.raises(ValueError, match="repair passage has no tokens"):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}").generate_until([Req()])
