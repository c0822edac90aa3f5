"""The ``mdm_llada`` backend in-process on a tiny checkpoint: requests in, honest records out."""

from __future__ import annotations

import math

import pytest

from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.metrics.sample_stats import split_stats


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


@pytest.fixture(scope="module")
def backend(tiny_ckpt):
    return MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},gen_length=16,nfe=4", {"batch_size": 1, "device": "cuda:0"})


def test_model_args_win_over_lm_eval_defaults(tiny_ckpt):
    b = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},batch_size=3", {"batch_size": 1})
    assert b.batch_size == 3 and str(b.device) == "cpu"


def test_unknown_model_arg_lists_valid_ones(tiny_ckpt):
    with pytest.raises(ValueError, match=r"unknown model arg\(s\) stepz.*Valid model args: .*block_length"):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},stepz=3")
    with pytest.raises(ValueError, match="'pretrained' is required"):
        MDMLLaDA.create_from_arg_string("nfe=4")


def test_records_measured_nfe_tokens_and_seconds(backend):
    gk = {"nfe": 8, "gen_length": 16, "return_stats": True, "until": []}
    before = backend.denoiser.nfe
    out = backend.generate_until([Req("summarize this.", gk), Req("another longer prompt here.", gk)])
    assert backend.denoiser.nfe - before == 16  # batch_size 1: two generations of 8 steps
    for resp in out:
        text, stats = split_stats(resp)
        assert stats["nfe"] == 8 and stats["steps"] == 8 and stats["gen_length"] == 16
        assert 0 <= stats["gen_tokens"] <= 16 and stats["seconds"] > 0
        assert "dslbench-stats" not in text


def test_no_stats_unless_asked(backend):
    (resp,) = backend.generate_until([Req("hello", {"until": []})])
    assert split_stats(resp)[1] is None


def test_padding_duplicates_are_not_decoded(backend):
    gk = {"nfe": 4, "gen_length": 16, "return_stats": True}
    a, b = Req("first prompt", gk), Req("second prompt", gk)
    before = backend.denoiser.nfe
    out = backend.generate_until([a, b, b, b])  # lm-eval pads a short rank with its last request
    assert backend.denoiser.nfe - before == 8  # only a and b were decoded
    assert out[2] == out[3] == out[1]


def test_same_seed_same_output(tiny_ckpt):
    gk = {"nfe": 4, "gen_length": 16, "temperature": 1.0, "remasking": "random"}
    runs = []
    for _ in range(2):
        b = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},seed=7")
        runs.append(b.generate_until([Req("a prompt", gk), Req("b prompt", gk)]))
    assert runs[0] == runs[1]


def test_budget_that_does_not_divide_over_blocks_names_arguments(backend):
    with pytest.raises(ValueError, match="block"):
        backend.generate_until([Req("x", {"nfe": 6, "gen_length": 16, "block_length": 4})])


def test_chat_template_is_applied_by_request(backend):
    prompt = backend.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt.startswith(backend.tokenizer.bos_token) and prompt.rstrip().endswith("<|end_header_id|>")
    assert backend.chat_template()


def test_loglikelihood_is_a_finite_log_probability_and_rolling_is_refused(tiny_ckpt):
    b = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},mc_num=8,mc_batch_size=4")
    (ll, greedy), (ll2, _) = b.loglikelihood([Req("the report is about", " alice."), Req("the report is about", " alice.")][:2])
    assert math.isfinite(ll) and ll < 0 and isinstance(greedy, bool)
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        b.loglikelihood_rolling([Req("text", None)])


def test_repair_context_is_unwrapped_from_the_chat_template(backend):
    wrapped = backend.apply_chat_template([{"role": "user", "content": "a clean passage."}])
    assert backend._strip_chat(wrapped) == "a clean passage."
    assert backend._strip_chat("no template here") == "no template here"


def test_repair_request_records_ids_and_counts_one_forward(backend):
    gk = {"repair_mode": "random", "repair_rate": 0.5, "repair_seed": 3, "repair_nfe": 1, "return_stats": True}
    before = backend.denoiser.nfe
    (resp,) = backend.generate_until([Req("alice larsen visited a red boat in oslo on monday.", gk)])
    _, stats = split_stats(resp)
    assert backend.denoiser.nfe - before == 1 and stats["nfe"] == 1
    n = len(stats["original_ids"])
    assert len(stats["corrupted_ids"]) == len(stats["repaired_ids"]) == n
    assert len(stats["corrupted_positions"]) == max(1, int(n * 0.5))  # the released count
    with pytest.raises(ValueError, match="repair_mode='swap'; allowed: random, semantic"):
        backend.generate_until([Req("x", {**gk, "repair_mode": "swap"})])


@pytest.mark.parametrize("extra", ["parallel=threshold,threshold=0.5", "parallel=eb,remasking=entropy,eb_gamma=0.5",
                                   "parallel=eb,remasking=margin,block_length=8,cfg=1.0"])
def test_adaptive_rules_record_each_sample_s_calls_within_the_cap(tiny_ckpt, extra):
    b = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},gen_length=16,nfe=8,batch_size=3,{extra}")
    gk = {"return_stats": True, "until": []}
    before = b.denoiser.nfe
    out = b.generate_until([Req("summarize this.", gk), Req("a longer prompt with more words in it.", gk),
                            Req("x", gk)])
    stats = [split_stats(r)[1] for r in out]
    batch_calls = b.denoiser.nfe - before
    assert all(s["parallel"] == extra.split(",")[0].split("=")[1] for s in stats)
    assert all(s["batch_nfe"] == batch_calls <= 8 for s in stats)
    assert max(s["nfe"] for s in stats) == batch_calls  # the slowest row made every call
    assert all(1 <= s["nfe"] <= 8 for s in stats)


@pytest.mark.parametrize(
    "args, match",
    [
        ("parallel=threshold,remasking=margin", "mdm_llada: parallel=threshold.*remasking=margin"),
        ("parallel=eb,remdm=loop", "mdm_llada: remdm=loop.*parallel=eb"),
        ("confidence_eos_eot_inf=eot", "mdm_llada: confidence_eos_eot_inf='eot'"),
        ("parallel=threshold,threshold=0", "mdm_llada: threshold=0.0"),
    ],
)
def test_meaningless_combinations_are_refused_at_load(tiny_ckpt, args, match):
    with pytest.raises(ValueError, match=match):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},{args}")


def test_confidence_eos_eot_inf_values(tiny_ckpt):
    expected = {"true": "released", "released": "released", "false": "false", "both": "both"}
    for value, mode in expected.items():
        backend = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},confidence_eos_eot_inf={value}")
        assert backend._unmasking(backend.args)[0] == mode, value
    with pytest.raises(ValueError, match="confidence_eos_eot_inf='maybe'.*false, true.*both"):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},confidence_eos_eot_inf=maybe")
