"""Unconditional-generation metrics: GenPPL against a re-implementation of ReMDM's released
``compute_generative_perplexity`` (kuleshov-group/remdm ``diffusion.py``), the released per-sample
token entropy, and the reference file's errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dslbench.data import uncond as refs
from dslbench.metrics import uncond as un
from dslbench.metrics.evaluator import load_evaluator

EOS = "<|endoftext|>"


def released_genppl(texts: list[str], model, tokenizer, max_length: int, batch_size: int,
                    eval_context_size: int = 1024) -> float:
    """The released loop, written again: all texts tokenized together (padding with EOS, truncation),
    batches of ``batch_size`` (a remainder is dropped, as released), chunks of 1,024 along the
    sequence, per chunk the NLL of every shifted target weighted by (first EOS of the chunk or not
    EOS), one weighted mean over everything, exponentiated."""
    tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, return_tensors="pt", return_token_type_ids=False, return_attention_mask=True,
                    truncation=True, padding=True, max_length=max_length)
    samples, attn = enc["input_ids"], enc["attention_mask"]
    total, weight = 0.0, 0.0
    for i in range(samples.shape[0] // batch_size):
        rows = slice(i * batch_size, (i + 1) * batch_size)
        for chunk, mask in zip(torch.split(samples[rows], eval_context_size, dim=-1),
                               torch.split(attn[rows], eval_context_size, dim=-1)):
            with torch.no_grad():
                logits = model(chunk, attention_mask=mask)[0].transpose(-1, -2)
            nlls = F.cross_entropy(logits[..., :-1], chunk[..., 1:], reduction="none")
            first_eos = (chunk == tokenizer.eos_token_id).cumsum(-1) == 1
            token_mask = chunk != tokenizer.eos_token_id
            w = (first_eos[..., 1:] + token_mask[..., 1:]).double()
            total += float((nlls.double() * w).sum())
            weight += float(w.sum())
    return math.exp(total / weight)


@pytest.fixture(scope="module")
def evaluator(tiny_gpt2):
    return load_evaluator(str(tiny_gpt2), device="cpu")


def _texts() -> list[str]:
    return [
        "the old bridge was repaired on monday with a friend" + EOS + "alice painted a red boat in oslo",
        "hana visited the city library.",  # short: the padding's first EOS is scored after it
        EOS + "kofi sold a small bakery" + EOS + EOS + "in riga on friday",
        "x",  # one token: only its padding EOS is a target
        " ".join(["marco rebuilt the north tower in kyoto alone ."] * 30),  # truncated at max_length
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_genppl_is_the_released_compute_generative_perplexity(evaluator, batch_size):
    texts = _texts()
    scores = evaluator.score_chunked(texts, max_length=64, batch_size=batch_size)
    released = released_genppl(texts, evaluator.model, evaluator.tokenizer, max_length=64, batch_size=1)
    assert un.pooled_genppl(scores) == pytest.approx(released, rel=1e-5)
    # each text's share is its own: scored alone against the same padded width, it is the same
    assert [n for _, n in scores] == [n for _, n in evaluator.score_chunked(texts, max_length=64, batch_size=1)]


def test_genppl_chunks_at_the_evaluator_context(evaluator):
    """Texts longer than the context (1,024 for GPT-2, as the release hard-codes) are scored in
    chunks, each alone: the first token of the second chunk is not a target."""
    long = " ".join(f"w{i}" for i in range(300))
    texts = [long, "a short one" + EOS + "and more"]
    n_tokens = len(evaluator.tokenizer(long)["input_ids"])
    assert n_tokens > evaluator.context_size
    scores = evaluator.score_chunked(texts, max_length=4096, batch_size=2)
    released = released_genppl(texts, evaluator.model, evaluator.tokenizer, max_length=4096, batch_size=2)
    assert un.pooled_genppl(scores) == pytest.approx(released, rel=1e-5)
    chunks = math.ceil(n_tokens / evaluator.context_size)
    assert chunks >= 2 and scores[0][1] == n_tokens - chunks  # one target fewer per chunk; the longest has no padding EOS


def test_genppl_of_nothing_scored_is_nan():
    assert math.isnan(un.pooled_genppl([]))
    assert math.isnan(un.pooled_genppl([(0.0, 0)]))


def test_entropy_is_the_released_per_sample_formula():
    ids = [5, 5, 7, 9, 9, 9, 2, 50256]
    counts = torch.unique(torch.tensor(ids), return_counts=True, sorted=True)[1]
    released = torch.special.entr(counts.float() / counts.sum()).sum().item()
    assert un.token_entropy(ids) == pytest.approx(released, rel=1e-6)
    assert un.token_entropy([1, 1, 2, 3]) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert un.token_entropy([4] * 10) == 0.0
    assert un.mean_entropy([1.0, 2.0, None]) == 1.5


def test_missing_references_name_the_variable_and_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DSLBENCH_DATA_DIR", raising=False)
    with pytest.raises(refs.MissingReferences, match=r"owt_references\.jsonl not found under \$DSLBENCH_DATA_DIR"):
        refs.reference_texts()
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(refs.MissingReferences, match="set DSLBENCH_DATA_DIR to its folder"):
        refs.load_references(1)
    (tmp_path / "owt_references.jsonl").write_text("".join(json.dumps({"text": f"ref {i}"}) + "\n" for i in range(3)))
    assert refs.load_references(2) == ["ref 0", "ref 1"]
    with pytest.raises(refs.MissingReferences, match=r"owt_references\.jsonl: 3 reference text\(s\), 5 needed"):
        refs.load_references(5)
    (tmp_path / "owt_references.jsonl").write_text('{"txt": "no text field"}\n')
    with pytest.raises(refs.DataFormatError, match="owt_references.jsonl"):
        refs.reference_texts()
