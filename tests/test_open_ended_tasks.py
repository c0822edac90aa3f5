"""The open-ended generation tasks (``dsl_gen_*``): shipped data, registry, the released prompt
formats, and every aggregate recomputed from the ``--log_samples`` records."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dslbench.data import open_ended as data
from dslbench.metrics import open_ended as oe
from dslbench.metrics.sample_stats import split_stats
from dslbench.paths import tasks_dir
from tests.shared_data import SHARED_DATA, needs

ROOT = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA / "open_ended"


def test_task_yamls_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "tasks/open_ended/_generate.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@needs(SHARED)
def test_shipped_data_is_the_released_files_byte_for_byte():
    for name, digest in data.SHA256.items():
        shipped = (data.HERE / name).read_bytes()
        assert shipped == (SHARED / name).read_bytes()
        assert hashlib.sha256(shipped).hexdigest() == digest


def test_released_data_shapes_and_a_modified_copy_is_refused(tmp_path, monkeypatch):
    prompts, prefixes = data.load_prompts(), data.load_prefixes()
    assert len(prompts) == len(prefixes) == 200
    assert [p["id"] for p in prompts] == list(range(200))
    assert {p["category"] for p in prompts} == {"expository", "creative", "qa", "instruction", "summarization"}
    assert all(r["full_text"].startswith(r["prefix"] + " " + r["continuation"]) for r in prefixes)
    for name in data.SHA256:
        (tmp_path / name).write_bytes((data.HERE / name).read_bytes().replace(b"a", b"b", 1))
    monkeypatch.setattr(data, "HERE", tmp_path)
    with pytest.raises(ValueError, match="sde_prompts_200.json: sha256"):
        data.load_prompts()


def test_tasks_and_groups_are_registered():
    from lm_eval.tasks import TaskManager

    names = set(TaskManager(include_defaults=False, include_path=str(tasks_dir())).all_tasks)
    wanted = {f"dsl_gen_{n}step" for n in (8, 16, 32, 64, 128)} | {f"dsl_gen_prefix_{n}step" for n in (8, 16, 32, 64, 128)}
    wanted |= {f"dsl_gen_synth_{n}step" for n in (4, 8, 16)} | {"dsl_gen_sweep", "dsl_gen_prefix_sweep", "dsl_gen_synth"}
    assert wanted <= names


# ------------------------------------------------------------------ the released prompt formats
@pytest.fixture(scope="module")
def backend(tiny_ckpt):
    from dslbench.harness.mdm_backend import MDMLLaDA

    return MDMLLaDA(pretrained=str(tiny_ckpt), device="cpu")


def test_chat_format_is_the_released_one_user_turn(backend):
    tok = backend.tokenizer
    text = "Write a short paragraph explaining photosynthesis."
    released = tok(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=False), add_special_tokens=False)["input_ids"]
    formatted = backend._format_prompt(text, "chat")
    assert backend._encode_context(formatted, "chat") == released
    assert released[0] == tok.bos_token_id  # the template carries BOS: none is added on top
    # lm-eval already applied the template (--apply_chat_template): not templated twice
    assert backend._format_prompt(formatted, "chat") == formatted


def test_raw_format_has_no_bos_and_refuses_a_templated_prompt(backend):
    tok = backend.tokenizer
    text = "Robert Boulter is an English film , television and theatre actor ."
    assert backend._encode_context(backend._format_prompt(text, "raw"), "raw") == tok(text, add_special_tokens=False)["input_ids"]
    assert backend._encode_context(text)[0] == tok.bos_token_id  # tasks without a format: BOS as before
    with pytest.raises(ValueError, match="without --apply_chat_template"):
        backend._format_prompt(backend._format_prompt(text, "chat"), "raw")
    with pytest.raises(ValueError, match="prompt_format='markdown'; allowed: chat, raw"):
        backend.request_options({"prompt_format": "markdown"})


class Req:
    def __init__(self, context, gen_kwargs):
        self.args = (context, gen_kwargs)
        self.repeats = 1


def test_task_response_cut_wins_and_is_recorded(backend):
    kw = {"until": [], "nfe": 4, "gen_length": 16, "return_stats": True}
    whole = split_stats(backend.generate_until([Req("a prompt.", {**kw, "response_cut": "none"})], disable_tqdm=True)[0])
    cut = split_stats(backend.generate_until([Req("a prompt.", {**kw, "response_cut": "eos"})], disable_tqdm=True)[0])
    assert whole[1]["response_cut"] == "none" and cut[1]["response_cut"] == "eos"
    assert whole[1]["gen_tokens"] >= cut[1]["gen_tokens"]
    with pytest.raises(ValueError, match="response_cut='all'; allowed: eos, none"):
        backend.request_options({"response_cut": "all"})


# ------------------------------------------------------------------ end to end through lm-eval
@pytest.fixture(scope="module")
def run(tiny_ckpt, tiny_gpt2, tmp_path_factory, monkeypatch_module):
    """Two open-ended tasks (one with MAUVE) in one lm-eval call, the evaluator's loads counted."""
    import transformers

    from dslbench.harness.run import evaluate_cell
    from dslbench.metrics import evaluator as ev

    ev._cache.clear()
    loads = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch_module.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                               lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    out = tmp_path_factory.mktemp("gen-cell")
    evaluate_cell("mdm_llada", {"pretrained": str(tiny_ckpt), "device": "cpu"},
                  ["dsl_gen_synth_8step", "dsl_gen_prefix_8step"], out, limit=6, seed=0, batch_size=4,
                  metadata={"ppl_model": str(tiny_gpt2)})
    (results,) = out.rglob("results_*.json")
    samples = {t: [json.loads(line) for line in next(out.rglob(f"samples_{t}_*.jsonl")).read_text().splitlines()]
               for t in ("dsl_gen_synth_8step", "dsl_gen_prefix_8step")}
    return json.loads(results.read_text())["results"], samples, loads


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_aggregate_is_recomputed_from_the_logged_samples(run, tiny_gpt2):
    from dslbench.metrics.evaluator import load_evaluator, released_mauve

    results, samples, _ = run
    evaluator = load_evaluator(str(tiny_gpt2), device="cpu")
    for task, records in samples.items():
        got = results[task]
        texts = [split_stats(r["filtered_resps"][0])[0] for r in records]
        stats = [split_stats(r["filtered_resps"][0])[1] for r in records]
        valid = [t for t in texts if t.strip()]
        assert got["n_valid,none"] == len(valid) and got["empty,none"] == pytest.approx(1 - len(valid) / len(texts))
        # each record holds what its sample contributes: the evaluator's NLL (as scored alone) and tokens
        for text, st, rec in zip(texts, stats, records):
            alone = evaluator.score([text], batch_size=1)[0] if text.strip() else None
            if alone is None:
                assert st["ppl_nll"] is None and rec["genppl"] is None
            else:
                assert st["ppl_nll"] == pytest.approx(alone[0], abs=1e-5) and st["ppl_tokens"] == alone[1]
                assert rec["genppl"] == st["ppl_nll"]
        nlls = [r["genppl"] for r in records if r["genppl"] is not None]
        assert got["genppl,none"] == pytest.approx(math.exp(sum(nlls) / len(nlls)))
        for n, key in ((2, "d2"), (3, "d3")):
            grams = [tuple(ws[i:i + n]) for t in valid for ws in [t.split()] for i in range(len(ws) - n + 1)]
            assert got[f"{key},none"] == pytest.approx(len(set(grams)) / len(grams) if grams else 0.0)
        pairs = [(a, b) for t in valid for ws in [t.split()] for a, b in zip(ws, ws[1:])]
        assert got["rep,none"] == pytest.approx(sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0)
        assert got["words,none"] == pytest.approx(sum(len(t.split()) for t in valid) / len(valid))
        docs = sorted(records, key=lambda r: r["doc"]["id"])
        expected = released_mauve([split_stats(r["filtered_resps"][0])[0] for r in docs],
                                  [r["doc"]["reference"] for r in docs], evaluator)
        assert got["mauve,none"] == pytest.approx(expected) or (math.isnan(expected) and math.isnan(got["mauve,none"]))


def test_prefix_task_prompts_are_the_released_prefixes_without_template(run):
    _, samples, _ = run
    prefixes = {r["id"]: r for r in data.load_prefixes()}
    for rec in samples["dsl_gen_prefix_8step"]:
        ref = prefixes[rec["doc"]["id"]]
        assert rec["arguments"]["gen_args_0"]["arg_0"] == ref["prefix"]
        assert rec["doc"]["reference"] == ref["continuation"]
        st = split_stats(rec["filtered_resps"][0])[1]
        assert st["gen_length"] == 256 and st["response_cut"] == "none" and st["nfe"] == 8


def test_the_evaluator_is_loaded_once_per_process(run):
    _, _, loads = run
    assert len(loads) == 1  # two tasks scored (GenPPL and MAUVE features) by one load


def test_offline_evaluator_error_names_the_model_and_the_fix(tiny_ckpt, tmp_path, monkeypatch):
    from dslbench.harness.run import evaluate_cell

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"'no-such-org/no-such-evaluator'.*ppl_model"):
        evaluate_cell("mdm_llada", {"pretrained": str(tiny_ckpt), "device": "cpu"}, ["dsl_gen_synth_4step"],
                      tmp_path, limit=1, seed=0, metadata={"ppl_model": "no-such-org/no-such-evaluator"})
