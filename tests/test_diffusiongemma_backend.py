"""The ``diffusiongemma`` backend on a tiny random DiffusionGemma checkpoint, checked against
transformers' own ``generate`` and forward pass."""

from __future__ import annotations

import pytest
import torch

from dslbench.harness.diffusiongemma_backend import DiffusionGemma
from dslbench.metrics.sample_stats import split_stats


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


@pytest.fixture(scope="module")
def dg_ckpt(tiny_ckpt, tmp_path_factory):
    from transformers import AutoTokenizer

    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    return make_tiny_diffusiongemma(tmp_path_factory.mktemp("dg") / "tiny-dg", tokenizer, seed=0)


@pytest.fixture(scope="module")
def backend(dg_ckpt):
    return DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt},batch_size=2,seed=7", {"device": "cpu"})


def _prompt(backend, texts):
    return backend._left_pad([backend._encode_context(t) for t in texts])


def _decoder_counter(model):
    calls = []
    handle = model.model.decoder.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_native_tokens_equal_transformers_generate(backend):
    # canvas_length 32: gen_length 40 takes two canvases, 4 steps each; the tail of the second is dropped
    ids, mask = _prompt(backend, ["summarize: the council met.", "a longer prompt about the river project"])
    opts = {"gen_length": 40, "nfe": 8, "stopping": "native"}
    gen = torch.Generator().manual_seed(123)
    with torch.inference_mode():
        ours = backend._sample(ids, mask, opts, gen)
    torch.manual_seed(123)
    ref = backend.model.generate(ids, attention_mask=mask, max_new_tokens=40, max_denoising_steps=4)
    assert torch.equal(ours.tokens, ref.sequences[:, ids.shape[1]: ids.shape[1] + 40])
    assert 1 <= ours.nfe <= 8 and ours.extra["steps_per_canvas"] == 4 and ours.extra["canvases"] == 2
    assert ours.extra["encoder_passes"] >= 1


def test_native_record_and_same_seed_same_text(backend):
    gk = {"nfe": 4, "gen_length": 32, "return_stats": True, "until": []}
    first = backend.generate_until([Req("one prompt", gk), Req("two prompt", gk)])
    again = backend.generate_until([Req("one prompt", gk), Req("two prompt", gk)])
    assert [split_stats(r)[0] for r in first] == [split_stats(r)[0] for r in again]
    for resp in first:
        text, stats = split_stats(resp)
        assert stats["backend"] == "diffusiongemma" and stats["stopping"] == "native"
        assert 1 <= stats["nfe"] <= 4 and stats["gen_length"] == 32 and stats["canvases"] == 1


def test_stopping_none_spends_exactly_the_budget(backend):
    calls, handle = _decoder_counter(backend.model)
    try:
        gk = {"nfe": 6, "gen_length": 64, "stopping": "none", "return_stats": True, "until": []}
        out = backend.generate_until([Req("a prompt", gk), Req("another prompt", gk)])
    finally:
        handle.remove()
    assert len(calls) == 6  # one batch of two rows: 6 decoder evaluations, 3 per canvas
    for resp in out:
        stats = split_stats(resp)[1]
        assert stats["nfe"] == 6 and stats["steps_per_canvas"] == 3 and stats["encoder_passes"] == 2


def test_repair_is_one_decoder_pass_and_argmax(backend):
    gk = {"repair_mode": "random", "repair_rate": 0.3, "repair_seed": 1, "return_stats": True, "until": []}
    passages = ["the team reviewed the budget on monday.", "a student measured the river after a long debate today."]
    out = backend.generate_until([Req(p, gk) for p in passages])
    bos = backend.tokenizer.bos_token_id
    for resp in out:
        stats = split_stats(resp)[1]
        assert stats["nfe"] == 1 and stats["repair_protocol"] == "published"
        corrupted = torch.tensor([stats["corrupted_ids"]])
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([[bos]]), decoder_input_ids=corrupted).logits
        assert stats["repaired_ids"] == logits.argmax(-1)[0].tolist()


def test_non_diffusiongemma_checkpoint_is_refused(tiny_ckpt):
    from dslbench.models.diffusiongemma import NotDiffusionGemmaError

    with pytest.raises(NotDiffusionGemmaError, match=r"model_type='llada'.*only\s+DiffusionGemma"):
        DiffusionGemma.create_from_arg_string(f"pretrained={tiny_ckpt}")


def test_bad_args_are_clear(dg_ckpt, backend):
    with pytest.raises(ValueError, match="stopping='early' is not allowed; choose one of: native, none"):
        DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt},stopping=early")
    with pytest.raises(ValueError, match="nfe=7 cannot be split evenly over the 2 canvas"):
        DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt},nfe=7,gen_length=64")
    with pytest.raises(ValueError, match="prompt_cache"):
        DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt},prompt_cache=true")
    with pytest.raises(ValueError, match="repair_nfe=2"):
        backend.generate_until([Req("a passage.", {"repair_mode": "random", "repair_nfe": 2})])
    with pytest.raises(ValueError, match="nfe=0 cannot be split"):
        backend.generate_until([Req("x", {"nfe": 0, "stopping": "none", "gen_length": 32})])


def test_none_ignores_adaptive_stopping_that_native_obeys(backend):
    # A generation config whose adaptive stopping fires after the first step of every canvas.
    config = backend.model.generation_config
    saved = (config.stability_threshold, config.confidence_threshold)
    config.stability_threshold, config.confidence_threshold = 0, 1e9
    try:
        gk = {"nfe": 6, "gen_length": 64, "return_stats": True, "until": []}
        native = split_stats(backend.generate_until([Req("a prompt", gk)])[0])[1]
        none = split_stats(backend.generate_until([Req("a prompt", {**gk, "stopping": "none"})])[0])[1]
    finally:
        config.stability_threshold, config.confidence_threshold = saved
    assert native["nfe"] == 2  # one step in each of the two canvases
    assert none["nfe"] == 6


def test_bad_arg_fails_before_loading(tmp_path):
    with pytest.raises(ValueError, match="gen_length=0 must be >= 1"):
        DiffusionGemma.create_from_arg_string(f"pretrained={tmp_path / 'absent'},gen_length=0")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffusionGemma.create_from_arg_string(f"pretrained={tmp_path / 'absent'}")
