"""The unconditional-generation tasks (``dsl_uncond_*``): generated YAMLs, registry, how an empty
prompt reaches the backends, and a plain ``lm_eval`` run whose every aggregate is recomputed from
its ``--log_samples`` file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dslbench.data.synth import make_repair_passages
from dslbench.metrics import open_ended as oe
from dslbench.metrics import uncond as un
from dslbench.metrics.sample_stats import split_stats
from dslbench.paths import tasks_dir

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (128, 256, 512, 1024)
UNCOND = {"until": [], "gen_length": 12, "return_stats": True, "prompt_format": "none", "response_cut": "keep"}


def write_references(folder: Path, n: int) -> Path:
    """Synthetic references in the documented format (``{"text": ...}`` a line)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = make_repair_passages(n, seed=3)
    (folder / "owt_references.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    return folder


def test_task_yamls_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "tasks/uncond/_generate.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_tasks_load_with_the_published_defaults_and_metadata_shrinks_them(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(write_references(tmp_path, 3)))
    names = set(TaskManager(include_defaults=False, include_path=str(tasks_dir())).all_tasks)
    assert {f"dsl_uncond_{t}step" for t in BUDGETS} | {"dsl_uncond_sweep"} <= names
    tasks = TaskManager(include_defaults=False, include_path=str(tasks_dir())).load(["dsl_uncond_128step"])["tasks"]
    (task,) = tasks.values()
    kw = task.config.generation_kwargs
    assert (kw["nfe"], kw["gen_length"], kw["prompt_format"], kw["response_cut"]) == (128, 1024, "none", "keep")
    docs = list(task.test_docs())
    assert len(docs) == 5000 and docs[7]["prompt"] == "sample 7" and docs[7]["reference"] == ""
    small = TaskManager(include_defaults=False, include_path=str(tasks_dir()),
                        metadata={"num_samples": 2, "length": 64}).load(["dsl_uncond_1024step"])["tasks"]
    (task,) = small.values()
    assert task.config.generation_kwargs["gen_length"] == 64 and task.config.generation_kwargs["nfe"] == 1024
    assert [d["reference"] for d in task.test_docs()] == [json.loads(line)["text"] for line in
                                                           (tmp_path / "owt_references.jsonl").read_text().splitlines()[:2]]
    with pytest.raises(ValueError, match=r"metadata length='sixty'"):
        TaskManager(include_defaults=False, include_path=str(tasks_dir()), metadata={"length": "sixty"}).load(["dsl_uncond_128step"])


def test_missing_references_fail_before_generating(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"owt_references\.jsonl not found under \$DSLBENCH_DATA_DIR"):
        TaskManager(include_defaults=False, include_path=str(tasks_dir())).load(["dsl_uncond_128step"])


# ------------------------------------------------------------------ the empty prompt at the backends
class Req:
    def __init__(self, context, gen_kwargs):
        self.args = (context, gen_kwargs)
        self.repeats = 1


def _generate(backend, names, **kw):
    out = backend.generate_until([Req(n, {**UNCOND, **kw}) for n in names], disable_tqdm=True)
    return [split_stats(o) for o in out]


@pytest.fixture(scope="module")
def mdm(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA

    return MDMLLaDA(pretrained=str(tiny_ckpt), device="cpu", temperature=1.0, batch_size=3)


def test_the_model_sees_no_prompt_and_each_sample_its_own_seed(mdm):
    assert mdm._encode_context(mdm._format_prompt("sample 3", "none"), "none") == []  # no BOS, no template
    rows = _generate(mdm, [f"sample {i}" for i in range(3)], nfe=4)
    assert all(st["prompt_tokens"] == 0 and st["nfe"] == 4 and len(st["gen_ids"]) == 12 for _, st in rows)
    assert len({st["sample_seed"] for _, st in rows}) == 3 and len({tuple(st["gen_ids"]) for _, st in rows}) > 1
    # same sample, same numbers, whatever the batch it is decoded in
    alone = _generate(mdm, ["sample 1"], nfe=4)[0]
    assert alone[1]["gen_ids"] == rows[1][1]["gen_ids"] and alone[0] == rows[1][0]
    # the whole span decoded as is: special tokens stay in the text
    assert rows[0][0] == mdm.tokenizer.decode(rows[0][1]["gen_ids"], skip_special_tokens=False)
    with pytest.raises(ValueError, match="without --apply_chat_template"):
        mdm._format_prompt(mdm._format_prompt("sample 1", "chat"), "none")


def test_every_backend_generates_from_an_empty_prompt(tiny_ckpt, untrained_dsl_ckpt):
    from dslbench.harness.dsl_backend import DSLLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    for backend in (SoftMaskLLaDA(pretrained=str(tiny_ckpt), device="cpu", temperature=1.0),
                    DSLLLaDA(pretrained=str(untrained_dsl_ckpt), device="cpu")):
        rows = _generate(backend, ["sample 0", "sample 1"], nfe=4)
        assert all(st["prompt_tokens"] == 0 and len(st["gen_ids"]) == 12 and st["nfe"] <= 5 for _, st in rows)
        assert rows[0][1]["sample_seed"] != rows[1][1]["sample_seed"]
    dsl = DSLLLaDA(pretrained=str(untrained_dsl_ckpt), device="cpu", numerics="released", accounting="published")
    with pytest.raises(ValueError, match="every unconditional sample would be the same"):
        _generate(dsl, ["sample 0"], nfe=4)


def test_diffusiongemma_refuses_unconditional_generation(tiny_ckpt, tmp_path):
    from transformers import AutoTokenizer

    from dslbench.harness.diffusiongemma_backend import DiffusionGemma
    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma

    ckpt = make_tiny_diffusiongemma(tmp_path / "dg", AutoTokenizer.from_pretrained(tiny_ckpt), seed=0)
    with pytest.raises(ValueError, match="diffusiongemma: unconditional generation .* not supported"):
        _generate(DiffusionGemma(pretrained=str(ckpt), device="cpu"), ["sample 0"], nfe=4)


def test_a_sample_without_its_reference_names_the_file_and_counts(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("uncond_utils", tasks_dir() / "uncond" / "uncond_utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(write_references(tmp_path, 1)))
    docs = utils.load_samples(num_samples=2, ppl_model="gpt2")["test"]
    assert docs[1]["reference"] == ""
    from dslbench.metrics.sample_stats import attach_stats

    resp = attach_stats("text", {"nfe": 4, "gen_tokens": 1, "seconds": 0.1, "gen_ids": [1], "ppl_model": "gpt2",
                                 "genppl_nll_sum": 1.0, "genppl_tokens": 1})
    assert utils.process_results(docs[0], [resp])["entropy"] == 0.0
    with pytest.raises(FileNotFoundError, match=r"owt_references\.jsonl: 1 reference text\(s\), 2 needed"):
        utils.process_results(docs[1], [resp])


# ------------------------------------------------------------------ plain lm_eval, end to end
@pytest.fixture(scope="module")
def run(tiny_ckpt, tiny_gpt2, tmp_path_factory):
    base = tmp_path_factory.mktemp("uncond-run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DSLBENCH_DATA_DIR": str(write_references(base / "refs", 4))}
    out = base / "out"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "mdm_llada",
           "--model_args", f"pretrained={tiny_ckpt},temperature=1.0", "--tasks", "dsl_uncond_128step",
           "--limit", "2", "--batch_size", "2", "--gen_kwargs", "nfe=8",  # a short run: 8 of the 128 steps
           "--metadata", json.dumps({"ppl_model": str(tiny_gpt2), "length": 24}),
           "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=base)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (results,) = out.rglob("results_*.json")
    (samples,) = out.rglob("samples_dsl_uncond_128step_*.jsonl")
    return json.loads(results.read_text())["results"]["dsl_uncond_128step"], \
        [json.loads(line) for line in samples.read_text().splitlines()], out


def test_every_aggregate_is_recomputed_from_the_logged_samples(run, tiny_gpt2):
    from dslbench.metrics.evaluator import load_evaluator, mauve_score
    from tests.test_uncond_metrics import released_genppl

    got, records, _ = run
    records = sorted(records, key=lambda r: r["doc"]["id"])
    texts = [split_stats(r["filtered_resps"][0])[0] for r in records]
    stats = [split_stats(r["filtered_resps"][0])[1] for r in records]
    assert len(records) == 2 and all(st["gen_length"] == 24 and st["nfe"] == 8 and st["prompt_tokens"] == 0 for st in stats)
    assert [r["arguments"]["gen_args_0"]["arg_0"] for r in records] == ["sample 0", "sample 1"]
    evaluator = load_evaluator(str(tiny_gpt2), device="cpu")
    assert got["genppl,none"] == pytest.approx(
        released_genppl(texts, evaluator.model, evaluator.tokenizer, max_length=24, batch_size=1), rel=1e-5)
    assert got["genppl,none"] == pytest.approx(un.pooled_genppl([r["genppl"] for r in records]))
    assert got["entropy,none"] == pytest.approx(sum(un.token_entropy(st["gen_ids"]) for st in stats) / 2)
    assert [r["entropy"] for r in records] == [un.token_entropy(st["gen_ids"]) for st in stats]
    expected = oe.released_metrics(texts, lambda valid: [None] * len(valid))
    for key in ("d2", "d3", "rep", "words", "n_valid", "empty"):
        assert got[f"{key},none"] == pytest.approx(expected[key])
    mauve = mauve_score([r["doc"]["reference"] for r in records], texts, evaluator, max_text_length=1024)
    assert got["mauve,none"] == pytest.approx(mauve)
    assert all(r["doc"]["reference"] for r in records)
    assert got["nfe,none"] == 8 and not math.isnan(got["genppl,none"])


def test_the_report_section_shows_the_run(run, tmp_path):
    from dslbench.report import uncond
    from dslbench.report.build import build_report

    got, _, out = run
    build_report([out], tmp_path / "report", baselines=tmp_path / "none", n_boot=10)
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index(f"## {uncond.SECTION}"):]
    row = next(line for line in section.splitlines() if "dsl_uncond_128step" in line).split(" | ")
    assert row[3:5] == ["128", "8"]  # T is the task's; NFE is what ran (--gen_kwargs nfe=8)
    assert float(row[5]) == pytest.approx(got["mauve,none"], abs=5e-4)
    assert float(row[6]) == pytest.approx(got["genppl,none"], rel=1e-3)
    assert float(row[7]) == pytest.approx(got["entropy,none"], abs=5e-3)
