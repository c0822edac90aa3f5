"""A prompt longer than the model: cut in the middle, and said so (record, warning, task metric)."""

from __future__ import annotations

import logging

import pytest

from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.metrics.sample_stats import split_stats


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


def test_over_long_prompt_is_cut_in_the_middle_recorded_and_warned_once(tiny_ckpt, caplog):
    b = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},max_length=64", {"batch_size": 2})
    gk = {"nfe": 4, "gen_length": 16, "return_stats": True}
    document = " ".join(f"word{i}" for i in range(200))
    long_prompt = f"Summarize the following text:\n\n{document}"
    short_prompt = "Summarize the following text:\n\nshort."
    with caplog.at_level(logging.WARNING, logger="dslbench.harness.prompts"):
        out = b.generate_until([Req(long_prompt, gk), Req(short_prompt, gk), Req(long_prompt + " more", gk)])
    warnings = [r.getMessage() for r in caplog.records if "cut in the middle" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 prompts" in warnings[0] and "max_length=64" in warnings[0]

    (_, cut), (_, whole) = split_stats(out[0]), split_stats(out[1])
    n_ids = len(b._encode_context(long_prompt))
    assert cut["prompt_tokens"] == 64 - 16 and cut["prompt_tokens_dropped"] == n_ids - 48
    assert whole["prompt_tokens_dropped"] == 0 and whole["prompt_dropped_text"] == ""
    dropped = cut["prompt_dropped_text"]
    # exact characters of the prompt, from the document (its end: the tail keeps the last 12 tokens)
    assert dropped in document and not document.endswith(dropped) and not document.startswith(dropped)
    ids = b._encode_context(long_prompt)
    head, tail = b.tokenizer.decode(ids[1:36]), b.tokenizer.decode(ids[-12:])
    assert long_prompt.startswith(head.strip()[:20]) and tail.strip() in long_prompt[-80:]


def test_cut_range_keeps_head_and_tail():
    assert MDMLLaDA._cut_range(10, 20) == (10, 10)
    assert MDMLLaDA._cut_range(100, 40) == (30, 90)  # tail = min(32, 40 // 4) = 10
    ids = list(range(100))
    assert MDMLLaDA._fit_prompt(ids, 40) == ids[:30] + ids[90:]
