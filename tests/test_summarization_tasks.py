"""The dsl_summ_* lm-eval tasks and groups: listing, docs, published prompts, settings, metrics, one run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import dslbench.paths
from dslbench.data.summarization import DATA_DIR_ENV, SummarizationDataError
from dslbench.metrics.sample_stats import attach_stats
from dslbench.metrics.summary import SUMMARY_METRICS
from tests.shared_data import SHARED_DATA, missing_reason, needs

SHARED = SHARED_DATA / "summarization"
needs_shared = needs(SHARED / "xsum.jsonl")
BUDGETS = (4, 8, 16, 32, 64, 128)
PUBLISHED = ("xsum", "cnndm", "pubmed", "arxiv")
PROMPTS = {  # verbatim from the DSL-LLaDA release (build_summarization_data.py)
    "xsum": "Summarize the following text in one sentence:",
    "cnndm": "Summarize the following news article in 2-3 sentences:",
    "pubmed": "Summarize the following scientific paper in a concise abstract:",
    "arxiv": "Summarize the following research paper in a concise abstract:",
    "samsum": "Summarize the following dialogue in 1-2 sentences:",
}
GEN_LENGTH = {"xsum": 128, "cnndm": 256, "pubmed": 256, "arxiv": 256, "samsum": 128, "synth": 64}
EFFICIENCY = ("nfe", "gen_tokens", "seconds_per_sample", "truncated_rate", "tokens_per_forward")
TASKS_DIR = dslbench.paths.tasks_dir() / "summarization"


def _tm(metadata=None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=str(dslbench.paths.tasks_dir()), metadata=metadata)


def _utils():
    spec = importlib.util.spec_from_file_location("summ_utils_under_test", TASKS_DIR / "summ_utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shared_data(monkeypatch):
    if not (SHARED / "xsum.jsonl").is_file():
        pytest.skip(missing_reason(SHARED / "xsum.jsonl"))
    monkeypatch.setenv(DATA_DIR_ENV, str(SHARED))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return SHARED


def test_generated_yamls_are_up_to_date():
    spec = importlib.util.spec_from_file_location("summ_generate", TASKS_DIR / "_generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(check=True) == 0, "run: python tasks/summarization/_generate.py"


def test_every_task_and_group_is_listed():
    tm = _tm()
    expected = {f"dsl_summ_{d}_{n}step" for d in (*PUBLISHED, "samsum", "synth") for n in BUDGETS}
    assert expected <= set(tm.all_subtasks)
    groups = {f"dsl_summ_{n}step" for n in BUDGETS} | {"dsl_summ_sweep", "dsl_summ_synth", "dsl_summ_samsum"}
    assert groups <= set(tm.all_groups)


def test_group_members():
    from lm_eval.tasks._yaml_loader import load_yaml

    groups = TASKS_DIR / "groups"
    for n in BUDGETS:
        cfg = load_yaml(groups / f"dsl_summ_{n}step.yaml", resolve_func=False)
        assert cfg["task"] == [f"dsl_summ_{d}_{n}step" for d in PUBLISHED]
        assert {m["metric"] for m in cfg["aggregate_metric_list"]} >= {"rouge1", "rouge2", "rougeL"}
    assert load_yaml(groups / "dsl_summ_sweep.yaml", resolve_func=False)["task"] == [f"dsl_summ_{n}step" for n in BUDGETS]
    assert load_yaml(groups / "dsl_summ_synth.yaml", resolve_func=False)["task"] == [
        f"dsl_summ_synth_{n}step" for n in BUDGETS
    ]


def test_task_configs_carry_budget_metrics_and_defaults():
    from lm_eval.tasks._yaml_loader import load_yaml

    for d in (*PUBLISHED, "samsum", "synth"):
        for n in BUDGETS:
            cfg = load_yaml(TASKS_DIR / d / f"dsl_summ_{d}_{n}step.yaml", resolve_func=False)
            assert cfg["generation_kwargs"] == {"until": [], "nfe": n, "gen_length": GEN_LENGTH[d], "return_stats": True}
            assert [m["metric"] for m in cfg["metric_list"]] == [*SUMMARY_METRICS, *EFFICIENCY]
            assert cfg["output_type"] == "generate_until" and cfg["test_split"] == "test"
            if d != "synth":
                assert {k: cfg["metadata"][k] for k in ("n_docs", "max_words", "seed")} == {
                    "n_docs": 1000, "max_words": 1500, "seed": 42,
                }


@needs_shared
def test_docs_and_published_prompts_one_user_turn(shared_data):
    tm = _tm(metadata={"n_docs": 3})
    names = ["dsl_summ_xsum_16step", "dsl_summ_cnndm_4step", "dsl_summ_samsum_8step"]
    tasks = tm.load(names)["tasks"]
    for name in names:
        task, dataset = tasks[name], name.split("_")[2]
        docs = list(task.test_docs())
        assert len(docs) == 3
        for doc in docs:
            assert task.doc_to_text(doc) == f"{PROMPTS[dataset]}\n\n{doc['document']}"
            assert task.doc_to_target(doc) == doc["summary"]
            seen = []
            task.fewshot_context(doc, 0, apply_chat_template=True, chat_template=lambda msgs, **_: seen.append(msgs) or "x")
            assert seen == [[{"role": "user", "content": f"{PROMPTS[dataset]}\n\n{doc['document']}"}]]
        assert task.config.generation_kwargs["gen_length"] == GEN_LENGTH[dataset]


@needs_shared
def test_metadata_settings_and_stable_draw(shared_data):
    default = _tm().load(["dsl_summ_xsum_4step"])["tasks"]["dsl_summ_xsum_4step"]
    docs = list(default.test_docs())
    assert len(docs) == 1000 and max(len(d["document"].split()) for d in docs) == 1500
    small = _tm(metadata={"n_docs": 100, "max_words": 500}).load(["dsl_summ_xsum_128step"])["tasks"]
    small_docs = list(small["dsl_summ_xsum_128step"].test_docs())
    assert len(small_docs) == 100 and max(len(d["document"].split()) for d in small_docs) == 500
    # Same seed-42 order whatever the budget or the size of the draw.
    assert [d["id"] for d in small_docs] == [d["id"] for d in docs[:100]]
    assert [d["id"] for d in small_docs[:3]] == ["38630833", "37412258", "29385276"]


@needs_shared
def test_headline_group_builds(shared_data):
    loaded = _tm(metadata={"n_docs": 2}).load(["dsl_summ_16step"])
    assert sorted(loaded["tasks"]) == sorted(f"dsl_summ_{d}_16step" for d in PUBLISHED)


def test_missing_file_offline_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SummarizationDataError) as err:
        _tm().load(["dsl_summ_pubmed_4step"])
    assert str(tmp_path / "pubmed.jsonl") in str(err.value) and DATA_DIR_ENV in str(err.value)


def test_bad_data_error_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    (tmp_path / "samsum.jsonl").write_text('{"id": "1", "document": "a: hi", "summary": "s"}\n{"id": "2", "docu')
    with pytest.raises(SummarizationDataError, match=r"samsum\.jsonl, line 2: not valid JSON"):
        _tm().load(["dsl_summ_samsum_4step"])


def test_process_results_scores_an_empty_output():
    utils = _utils()
    doc = {"id": "1", "document": "the cat sat on the mat .", "summary": "a cat sat", "instruction": "x"}
    stats = {"nfe": 4, "gen_tokens": 0, "seconds": 0.5, "prompt_tokens_dropped": 0, "prompt_dropped_text": ""}
    out = utils.process_results(doc, [attach_stats("", stats)])
    assert list(out) == [*SUMMARY_METRICS, *EFFICIENCY]
    assert out["rouge1"] == out["rouge2"] == out["rougeL"] == 0.0
    assert out["empty"] == 1.0 and out["short_output"] == 1.0 and out["words"] == 0.0
    assert out["n_empty"] == 1.0 and out["words_nonempty"] is None
    assert out["coverage"] is out["density"] is out["compression"] is None  # nothing filled in
    assert out["nfe"] == 4.0 and out["tokens_per_forward"] == (0.0, 4.0) and out["truncated_rate"] == 0.0
    full = utils.process_results(doc, [attach_stats("a cat sat", {**stats, "gen_tokens": 3})])
    assert full["rouge1"] == 100.0 and full["empty"] == 0.0


def test_process_results_needs_the_efficiency_record():
    with pytest.raises(ValueError, match="efficiency record"):
        _utils().process_results({"document": "d", "summary": "s"}, ["text without a record"])


def test_synth_task_builds_with_settable_size():
    tasks = _tm(metadata={"n_docs": 4}).load(["dsl_summ_synth_16step"])["tasks"]
    docs = list(tasks["dsl_summ_synth_16step"].test_docs())
    assert len(docs) == 4 and docs[0]["instruction"] == "Summarize the following text:"
    assert tasks["dsl_summ_synth_16step"].config.generation_kwargs["nfe"] == 16


@needs_shared
def test_end_to_end_xsum_4step(shared_data, tiny_ckpt):
    import lm_eval

    from dslbench.metrics.sample_stats import split_stats

    out = lm_eval.simple_evaluate(
        model="mdm_llada",
        model_args={"pretrained": str(tiny_ckpt)},
        tasks=["dsl_summ_xsum_4step"],
        limit=2,
        log_samples=True,
        task_manager=_tm(),
    )
    metrics = out["results"]["dsl_summ_xsum_4step"]
    for key in (*SUMMARY_METRICS, *EFFICIENCY):
        assert f"{key},none" in metrics, key
    assert 0 < metrics["nfe,none"] <= 4
    samples = out["samples"]["dsl_summ_xsum_4step"]
    cut = [split_stats(s["resps"][0][0])[1]["prompt_tokens_dropped"] > 0 for s in samples]
    assert metrics["truncated_rate,none"] == sum(cut) / len(cut)
    assert [s["doc"]["id"] for s in samples] == ["38630833", "37412258"]
    for s in samples:
        text, stats = split_stats(s["resps"][0][0])
        assert stats["nfe"] <= 4 and stats["gen_length"] == 128
        context, gen_kwargs = s["arguments"][0]
        assert gen_kwargs["nfe"] == 4 and context.startswith(PROMPTS["xsum"] + "\n\n")


def test_cyrillic_references_warn_once_and_the_unicode_tokenizer_scores_them(tmp_path, monkeypatch, caplog):
    import json
    import logging

    rows = [{"id": str(i), "document": f"Анна: привет {i}! Борис: пока.", "summary": "Анна и Борис прощаются."} for i in range(3)]
    rows.append({"id": "en", "document": "anna: hi. bob: bye.", "summary": "Anna greets Bob."})
    (tmp_path / "samsum.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with caplog.at_level(logging.WARNING):
        task = _tm(metadata={"n_docs": 4}).load(["dsl_summ_samsum_4step"])["tasks"]["dsl_summ_samsum_4step"]
    warned = [r for r in caplog.records if "no ROUGE tokens" in r.getMessage()]
    assert len(warned) == 1 and "3 of 4 reference summaries" in warned[0].getMessage()
    assert "rouge_tokenizer" in warned[0].getMessage()
    doc = next(d for d in task.test_docs() if d["id"] == "0")
    stats = {"nfe": 4, "gen_tokens": 3, "seconds": 0.1, "prompt_tokens_dropped": 0, "prompt_dropped_text": ""}
    assert _utils().process_results(doc, [attach_stats(doc["summary"], stats)])["rouge1"] == 0.0  # default tokenizer
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        task = _tm(metadata={"n_docs": 4, "rouge_tokenizer": "unicode"}).load(["dsl_summ_samsum_4step"])["tasks"]["dsl_summ_samsum_4step"]
    assert not [r for r in caplog.records if "no ROUGE tokens" in r.getMessage()]
    doc = next(d for d in task.test_docs() if d["id"] == "0")
    assert doc["rouge_tokenizer"] == "unicode"
    assert _utils().process_results(doc, [attach_stats(doc["summary"], stats)])["rouge1"] == 100.0
    with pytest.raises(ValueError, match="rouge_tokenizer='latin'"):
        _utils().load_samsum(n_docs=1, rouge_tokenizer="latin")


def test_newsroom_is_scored_against_the_source_the_model_saw():
    doc = {"id": "1", "document": "alpha beta gamma . delta epsilon zeta .", "summary": "alpha beta", "instruction": "x"}
    base = {"nfe": 4, "gen_tokens": 3, "seconds": 0.1}
    full = _utils().process_results(doc, [attach_stats("delta epsilon", {**base, "prompt_tokens_dropped": 0, "prompt_dropped_text": ""})])
    assert full["coverage"] == 1.0 and full["truncated_rate"] == 0.0
    cut = {**base, "prompt_tokens_dropped": 3, "prompt_dropped_text": " delta epsilon zeta ."}
    seen = _utils().process_results(doc, [attach_stats("delta epsilon", cut)])
    assert seen["coverage"] == 0.0 and seen["truncated_rate"] == 1.0  # the copied words were never shown
    assert seen["compression"] == pytest.approx(4 / 2)  # |alpha beta gamma .| / |delta epsilon|
