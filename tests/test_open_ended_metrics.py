"""Open-ended metrics (released DSL-LLaDA compute_metrics), the evaluator LM and MAUVE, on a tiny
GPT-2 evaluator built once per session."""

from __future__ import annotations

import json
import math
import random
import string

import pytest

from dslbench.metrics import open_ended as oe

# --- pure metrics, numbers computed by hand --------------------------------------------------------

TEXTS = ["the cat the cat sat", "", "   ", "a a a b", "the cat sat"]
# valid: 3 texts of 5, 4, 3 words -> words 4.0, n_valid 3, empty 2/5.
# rep: pairs 4 + 3 + 2 = 9; repeats 0 + 2 ("a a" twice) + 0 = 2 -> 2/9.
# d2: 4 + 3 + 2 = 9 bigrams; distinct {the cat, cat the, cat sat, a a, a b} = 5 -> 5/9.
# d3: 3 + 2 + 1 = 6 trigrams; distinct {the cat the, cat the cat, the cat sat, a a a, a a b} -> 5/6.
# (pooled: the per-text mean of distinct-2 would be (3/4 + 2/3 + 1) / 3, not 5/9.)


def _items(texts, scores=None):
    scores = scores if scores is not None else [None] * len(texts)
    rows = [oe.metric_items(oe.per_sample(t), s) for t, s in zip(texts, scores)]
    return json.loads(json.dumps(rows))  # what lm-eval logs and hands back must survive JSON


def _aggregate(rows):
    return {name: agg([r[name] for r in rows]) for name, agg in oe.AGGREGATIONS.items()}


def test_per_sample_record():
    assert oe.per_sample("a a\tb\nc") == {"valid": 1, "words": 4, "pairs": 3, "repeats": 1,
                                         "ngrams2": ["a a", "a b", "b c"], "ngrams3": ["a a b", "a b c"]}
    assert oe.per_sample(" \n")["valid"] == 0 and oe.per_sample(" \n")["ngrams2"] is None


def test_hand_computed_metrics():
    got = _aggregate(_items(TEXTS))
    assert got["n_valid"] == 3
    assert got["empty"] == pytest.approx(2 / 5)
    assert got["words"] == pytest.approx(4.0)
    assert got["rep"] == pytest.approx(2 / 9)
    assert got["d2"] == pytest.approx(5 / 9)
    assert got["d3"] == pytest.approx(5 / 6)
    assert math.isnan(got["genppl"])  # nothing scored: no figure, not a filled-in number


def test_no_valid_output_and_no_pairs():
    got = oe.released_metrics(["", "  "], nll_fn=lambda texts: pytest.fail("nothing to score"))
    assert math.isnan(got["genppl"])
    assert (got["d2"], got["d3"], got["rep"], got["words"], got["n_valid"], got["empty"]) == (0.0, 0.0, 0.0, 0.0, 0, 1.0)
    one_word = _aggregate(_items(["hello"]))  # valid, but no pair and no n-gram
    assert (one_word["d2"], one_word["rep"], one_word["words"], one_word["n_valid"]) == (0.0, 0.0, 1.0, 1)


def test_genppl_is_exp_of_mean_nll():
    assert oe.genppl([1.0, None, 2.0]) == pytest.approx(math.exp(1.5))


# --- the tiny evaluator -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def evaluator(tiny_gpt2):
    from dslbench.metrics.evaluator import load_evaluator

    return load_evaluator(str(tiny_gpt2), device="cpu")


def _passages(n, seed=1, split="test"):
    from dslbench.data.synth import make_repair_passages

    return [r["text"] for r in make_repair_passages(n, seed=seed, split=split)]


def _gibberish(n, seed=0, n_words=20):
    rng = random.Random(seed)
    return [" ".join("".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(3, 30)))
                     for _ in range(n_words)) for _ in range(n)]


def _scoring_texts():
    long = " ".join(_passages(12))  # > 128 words: the cut matters
    huge = _gibberish(1, seed=3, n_words=130)[0]  # 128 long random words: > 1024 tokens, truncated
    return [*_passages(6), long, huge, "", "  \n ", "x", "a a a a b b", "hello world"]


def test_tiny_evaluator_shape(evaluator, tiny_gpt2):
    assert "gpt2" in tiny_gpt2.name
    assert evaluator.model.config.n_positions == 1024 and evaluator.tokenizer.eos_token_id is not None
    assert evaluator.tokenizer.mask_token is None
    huge = _scoring_texts()[7]
    assert len(evaluator.tokenizer(" ".join(huge.split()[:128]))["input_ids"]) > 1024


def test_tiny_evaluator_learned_something(evaluator):
    synth = _passages(8, seed=5)
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in synth]
    mean = lambda scores: sum(s[0] for s in scores) / len(scores)  # noqa: E731
    assert mean(evaluator.score(synth)) < mean(evaluator.score(shuffled)) - 1.0


def test_make_tiny_cli_is_deterministic(tiny_gpt2, tmp_path):
    from dslbench.cli import main

    out = tmp_path / "again-gpt2"
    assert main(["make-tiny", "--family", "gpt2", "--seed", "0", "--out", str(out)]) == 0
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (out / name).read_bytes() == (tiny_gpt2 / name).read_bytes(), name


def _released_compute_metrics(texts, model, tokenizer):
    """The released loop, one text at a time: labels=ids loss on the 128-word cut, < 2 tokens skipped."""
    import torch

    valid = [t for t in texts if t.strip()]
    nlls = []
    for t in valid:
        cut = " ".join(t.split()[:128])
        if not cut:
            continue
        ids = tokenizer(cut, return_tensors="pt", truncation=True, max_length=1024)["input_ids"]
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            nlls.append(model(ids, labels=ids).loss.item())
    words = [t.split() for t in valid]

    def distinct(n):
        grams = [tuple(w[i:i + n]) for w in words for i in range(len(w) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    pairs = sum(max(len(w) - 1, 0) for w in words)
    reps = sum(1 for w in words for a, b in zip(w, w[1:]) if a == b)
    return {"genppl": math.exp(sum(nlls) / len(nlls)) if nlls else None, "d2": distinct(2), "d3": distinct(3),
            "rep": reps / pairs if pairs else 0.0, "words": sum(map(len, words)) / len(words) if words else 0,
            "n_valid": len(valid)}


def test_released_equality(evaluator):
    texts = _scoring_texts()
    ref = _released_compute_metrics(texts, evaluator.model, evaluator.tokenizer)
    ours = oe.released_metrics(texts, evaluator.score)
    items = _aggregate(_items(texts, evaluator.score(texts, batch_size=3)))
    for got in (ours, items):
        assert got["genppl"] == pytest.approx(ref["genppl"], rel=1e-5)
        for name in ("d2", "d3", "rep", "words", "n_valid"):
            assert got[name] == pytest.approx(ref[name], abs=1e-12), name
    assert ours["empty"] == pytest.approx(2 / len(texts))


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_score_equals_unbatched_loss(evaluator, batch_size):
    import torch

    texts = _scoring_texts()
    scores = evaluator.score(texts, batch_size=batch_size)
    for text, score in zip(texts, scores):
        cut = " ".join(text.split()[:128])
        ids = evaluator.tokenizer(cut, return_tensors="pt", truncation=True, max_length=1024)["input_ids"] if cut else None
        if ids is None or ids.shape[1] < 2:
            assert score is None, text
            continue
        with torch.no_grad():
            loss = evaluator.model(ids, labels=ids).loss.item()
        assert score[1] == ids.shape[1]
        assert score[0] == pytest.approx(loss, abs=1e-5)


def test_evaluator_cached_per_name_and_device(tiny_gpt2, monkeypatch):
    import torch
    import transformers

    from dslbench.metrics import evaluator as ev

    monkeypatch.setattr(ev, "_cache", {})
    calls = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    first = ev.load_evaluator(str(tiny_gpt2))
    assert ev.load_evaluator(tiny_gpt2 / "." , device="cpu") is first
    assert len(calls) == 1 and first.model.dtype == torch.float32 and not first.model.training

    monkeypatch.setattr(ev, "_default_device", None)
    ev.set_default_device("cuda:1")  # only resolved here, never used
    assert ev._resolve_device(None) == torch.device("cuda:1")


def test_offline_missing_model_is_one_clear_line(monkeypatch):
    from dslbench.metrics.evaluator import load_evaluator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        load_evaluator("dslbench-no-such-org/no-such-model-gpt2", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "dslbench-no-such-org/no-such-model-gpt2" in msg and '"ppl_model"' in msg


# --- MAUVE -------------------------------------------------------------------------------------------


def test_mauve_equals_mauve_text_path(evaluator, tiny_gpt2):
    import mauve
    import numpy as np
    from mauve.compute_mauve import get_features_from_input

    from dslbench.metrics.evaluator import mauve_score

    p, q = _passages(24, seed=2), _passages(24, seed=3, split="validation")
    theirs_feats = get_features_from_input(None, None, p, str(tiny_gpt2), 256, -1, name="p", batch_size=1)
    np.testing.assert_allclose(evaluator.features(p), theirs_feats, atol=1e-5)
    theirs = mauve.compute_mauve(p_text=p, q_text=q, featurize_model_name=str(tiny_gpt2),
                                 max_text_length=256, device_id=-1).mauve
    assert mauve_score(p, q, evaluator) == pytest.approx(theirs, abs=1e-6)


def test_mauve_sanity(evaluator):
    from dslbench.metrics.evaluator import mauve_score

    p = _passages(30, seed=4)
    same = mauve_score(p, p, evaluator)
    different = mauve_score(p, _gibberish(30), evaluator)
    assert same > 0.95
    assert different < same - 0.3


def test_released_mauve_pairing(evaluator, monkeypatch):
    from dslbench.metrics import evaluator as ev

    seen = []
    monkeypatch.setattr(ev, "mauve_score", lambda p, q, e, **kw: seen.append((p, q)) or 0.5)
    gens, refs = ["g1", "", "g3", "g4"], ["r1", "r2", " ", "r4"]
    # 3 non-empty generations -> the first 3 references, minus the blank one -> p = [r1, r2];
    # q = the first 2 non-empty generations (not the references of g1, g3: the released quirk).
    assert ev.released_mauve(gens, refs, evaluator) == 0.5
    assert seen == [(["r1", "r2"], ["g1", "g3"])]
    assert math.isnan(ev.released_mauve(["g1", ""], ["r1", "r2"], evaluator))  # 1 text: mauve cannot run
    assert len(seen) == 1
