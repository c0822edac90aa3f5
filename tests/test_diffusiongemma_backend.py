"""The ``diffusiongemma`` backend on a tiny random DiffusionGemma checkpoint, checked against
transformers' own ``generate`` and forward pass."""

from __future__ import annotations

import contextlib

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


@contextlib.contextmanager
def steered(model, strength=14.0):
    """The model's forward with a pull towards a fixed canvas that grows as the canvas holds more of
    it, so adaptive stopping fires at a step that depends on the draws. Both transformers' generate
    and the backend call the model's forward, so both see the same model."""
    inner, V = model.forward, model.config.text_config.vocab_size

    def forward(*args, decoder_input_ids=None, **kwargs):
        out = inner(*args, decoder_input_ids=decoder_input_ids, **kwargs)
        if decoder_input_ids is not None:
            target = (torch.arange(decoder_input_ids.shape[1]) * 7 + 30) % V
            share = (decoder_input_ids == target).float().mean(-1)[:, None, None]
            out.logits = out.logits + strength * (0.3 + share) * torch.nn.functional.one_hot(target, V)
        return out

    model.forward = forward
    try:
        yield
    finally:
        del model.forward


@contextlib.contextmanager
def generation_config(model, **values):
    config = model.generation_config
    saved = {k: getattr(config, k) for k in values}
    for k, v in values.items():
        setattr(config, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(config, k, v)


def _alone_and_generate(backend, text, gen_length, nfe, seed):
    ids, mask = _prompt(backend, [text])
    steps = nfe // -(-gen_length // backend.info.canvas_length)
    with torch.inference_mode():
        ours = backend._sample(ids, mask, {"gen_length": gen_length, "nfe": nfe, "stopping": "native", "draw": "all"},
                               torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        ref = backend.model.generate(ids, attention_mask=mask, max_new_tokens=gen_length, max_denoising_steps=steps)
    return ours, ref.sequences[:, ids.shape[1]: ids.shape[1] + gen_length]


@pytest.mark.parametrize("case", ["plain", "stopping", "eos"])
def test_native_tokens_equal_transformers_generate_for_a_batch_of_one(backend, case):
    # canvas_length 32: gen_length 72 takes three canvases, 8 steps each; the tail of the last is dropped.
    # plain: every step runs; stopping: the steered model becomes stable and confident mid-canvas;
    # eos: an EOS inside the second canvas ends the row (pad after it, no third canvas)
    texts = ["summarize: the council met.", "a longer prompt about the river project"]
    ctx = contextlib.ExitStack()
    with ctx:
        if case != "plain":
            ctx.enter_context(steered(backend.model))
            ctx.enter_context(generation_config(backend.model, stability_threshold=1, confidence_threshold=3.0))
        if case == "eos":
            plain, _ = _alone_and_generate(backend, texts[0], 72, 24, seed=123)
            ctx.enter_context(generation_config(backend.model, eos_token_id=[int(plain.tokens[0, 40])]))
        for text in texts:
            ours, ref = _alone_and_generate(backend, text, 72, 24, seed=123)
            assert torch.equal(ours.tokens[:, : ref.shape[1]], ref)
            assert (ours.tokens[:, ref.shape[1]:] == backend.info.pad_id).all()  # canvases generate never made
            assert ours.extra["steps_per_canvas"] == 8 and ours.extra["canvases"] == 3
            if case == "plain":
                assert ours.nfe == (24,)
            if case == "stopping":
                assert 3 <= ours.nfe[0] < 24  # stopped early in some canvas
            if case == "eos":
                assert ref.shape[1] <= 64 and backend.info.pad_id in ours.tokens[0].tolist()
                assert ours.row_extra[0]["canvases_denoised"] == ref.shape[1] // 32 == ours.row_extra[0]["encoder_passes"]


def test_a_document_gets_the_same_sample_and_nfe_in_any_batch(backend, dg_ckpt):
    texts = ["one prompt", "a second, longer prompt about rivers and the council budget", "x", "fourth prompt here"]
    gk = {"nfe": 16, "gen_length": 64, "return_stats": True, "until": []}
    with steered(backend.model), generation_config(backend.model, stability_threshold=1, confidence_threshold=3.0):
        by_batch = {}
        for batch in (1, 3, 4):
            be = DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt},seed=7", {"batch_size": batch})
            be.model, be.denoiser = backend.model, backend.denoiser  # the steered weights
            by_batch[batch] = [split_stats(r) for r in be.generate_until([Req(t, gk) for t in texts])]
    one = by_batch[1]
    for batch in (3, 4):
        assert [t for t, _ in by_batch[batch]] == [t for t, _ in one]
        keys = ("nfe", "encoder_passes", "canvases_denoised")
        assert [[s[k] for k in keys] for _, s in by_batch[batch]] == [[s[k] for k in keys] for _, s in one]
    assert len({s["nfe"] for _, s in one}) > 1  # rows stop at their own step, counted per row


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
        assert stats["draw"] == "all"


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
    with pytest.raises(ValueError, match="draw='some' is not allowed; choose one of: all, accepted"):
        DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt},draw=some")
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


def test_an_older_transformers_is_named(monkeypatch, dg_ckpt):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    with pytest.raises(ImportError, match=r"transformers 5\.17\.0 is installed.*needs transformers >= 5\.24"):
        DiffusionGemma.create_from_arg_string(f"pretrained={dg_ckpt}")
