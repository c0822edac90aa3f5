"""The optional approximate prompt cache: the model's prefix forward, the seam wrapper, the
backends' ``prompt_cache`` args (off by default) and their errors."""

from __future__ import annotations

import pytest
import torch

from dslbench.diffusion.denoiser import ModelDenoiser
from dslbench.diffusion.mdm import mdm_generate
from dslbench.diffusion.prompt_cache import PromptCachedDenoiser
from dslbench.diffusion.sde import dsl_generate
from dslbench.harness.dsl_backend import DSLLLaDA
from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.harness.softmask_backend import SoftMaskLLaDA
from dslbench.metrics.sample_stats import split_stats
from dslbench.models.llada import LLaDAModelLM
from dslbench.models.tiny import tiny_config

VOCAB = 97
MASK = 3


class Req:
    def __init__(self, context, gen_kwargs):
        self.args = (context, gen_kwargs)
        self.repeats = 1


def _model(n_layers: int = 2, seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(VOCAB, n_layers=n_layers, mask_token_id=MASK, **overrides)).eval()


def _seam(model) -> ModelDenoiser:
    return ModelDenoiser(model, mask_id=MASK, eos_id=1, eos_ids=(1,), vocab_size=VOCAB)


def _left_padded(batch=3, width=12, pads=(0, 4, 7), seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, width), generator=g)
    mask = torch.ones((batch, width), dtype=torch.long)
    for row, n in enumerate(pads):
        ids[row, :n], mask[row, :n] = 0, 0
    return ids, mask


def _dsl_seam(model):
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.diffusion.dsl_denoiser import DSLDenoiser

    dsl = DSLModules(VOCAB, 8, model.config.d_model, beta_init=2.0, noise_seed=0)
    dsl.init_from_backbone(model.get_input_embeddings().weight, MASK)
    return DSLDenoiser(model=model, dsl=dsl, mask_id=MASK, eos_id=1, eos_ids=(1,), vocab_size=VOCAB)


# --------------------------------------------------------------------------- (a) exactness
@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 2}])
def test_cached_prefix_forward_equals_full_forward(overrides):
    model = _model(**overrides)
    ids, mask = _left_padded()
    P = 12
    canvas = torch.cat([ids, torch.randint(5, VOCAB, (3, 8))], dim=1)
    full_mask = torch.cat([mask, torch.ones(3, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model(input_ids=canvas, attention_mask=full_mask).logits
        kept = model(input_ids=canvas, attention_mask=full_mask, keep_prefix=P)
        cached = model(input_ids=canvas[:, P:], attention_mask=full_mask, prefix_kv=kept.prefix_kv).logits
    assert torch.equal(kept.logits, full)  # asking for the K/V leaves the logits alone
    assert kept.prefix_kv.length == P and len(kept.prefix_kv.layers) == model.config.n_layers
    torch.testing.assert_close(cached, full[:, P:], rtol=1e-5, atol=1e-5)


def test_padded_prefix_keys_stay_masked():
    # Changing what sits under the padding must not change the cached forward's logits.
    model = _model()
    ids, mask = _left_padded()
    other = ids.clone()
    other[mask == 0] = 42
    gen = torch.randint(5, VOCAB, (3, 6))
    full_mask = torch.cat([mask, torch.ones(3, 6, dtype=torch.long)], dim=1)
    outs = []
    with torch.no_grad():
        for prompt in (ids, other):
            kv = model(input_ids=torch.cat([prompt, gen], 1), attention_mask=full_mask, keep_prefix=12).prefix_kv
            outs.append(model(input_ids=gen, attention_mask=full_mask, prefix_kv=kv).logits)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def _cached_canvas(model):
    """A prompt-cache seam over ``model`` for 12-token left-padded prompts, and a canvas of those
    prompts + 8 masked positions with its attention mask."""
    ids, mask = _left_padded()
    canvas = torch.cat([ids, torch.full((3, 8), MASK)], 1)
    full_mask = torch.cat([mask, torch.ones(3, 8, dtype=torch.long)], 1)
    return PromptCachedDenoiser(_seam(model), prompt_len=ids.shape[1]), canvas, full_mask


def test_wrapper_serves_gen_rows_from_cache_and_full_shape():
    seam, canvas, full_mask = _cached_canvas(_model())
    with torch.no_grad():
        first = seam.forward(seam.embed(canvas), full_mask)
        second = seam.forward(seam.embed(canvas), full_mask)
    assert (seam.full_calls, seam.cached_calls) == (1, 1)
    assert second.shape == first.shape == (3, 20, VOCAB)
    torch.testing.assert_close(second, first, rtol=1e-5, atol=1e-5)


def test_wrapper_logits_from_skips_prompt_rows_and_refills_them_when_asked():
    """Samplers ask for the generated rows (``logits_from=P``): the full call's head skips the
    prompt and stores no prompt rows; a later whole-canvas call then runs in full again (it has
    no prompt rows to serve) and is served from the cache after that."""
    model = _model()
    seam, canvas, full_mask = _cached_canvas(model)
    with torch.no_grad():
        reference = _seam(model).forward(seam.embed(canvas), full_mask)
        first = seam.forward(seam.embed(canvas), full_mask, logits_from=12)
        cached = seam.forward(seam.embed(canvas), full_mask, logits_from=15)
        whole = seam.forward(seam.embed(canvas), full_mask)
        whole_cached = seam.forward(seam.embed(canvas), full_mask, logits_from=4)
    assert first.shape == (3, 8, VOCAB) and cached.shape == (3, 5, VOCAB) and whole_cached.shape == (3, 16, VOCAB)
    assert (seam.full_calls, seam.cached_calls) == (2, 2)
    torch.testing.assert_close(first, reference[:, 12:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached, reference[:, 15:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole_cached, reference[:, 4:], rtol=1e-5, atol=1e-5)
    assert seam.nfe == 4


# --------------------------------------------------------------------------- (b) NFE
def test_nfe_counted_once_per_call_on_the_shared_counter():
    model = _model()
    inner = _seam(model)
    ids, mask = _left_padded()
    plain = mdm_generate(inner, ids, mask, gen_length=8, steps=4, cfg_scale=1.0)
    seam = PromptCachedDenoiser(inner, prompt_len=ids.shape[1])
    cached = mdm_generate(seam, ids, mask, gen_length=8, steps=4, cfg_scale=1.0)
    assert plain.nfe == cached.nfe == 8 and inner.nfe == 16 and seam.nfe == inner.nfe
    assert seam.full_calls == 2 and seam.cached_calls == 6  # one entry for the prompt, one for CFG's masked copy

    dsl_inner = _dsl_seam(model)
    a = dsl_generate(dsl_inner, ids, mask, gen_length=8, nfe=7, generator=torch.Generator().manual_seed(0))
    b = dsl_generate(PromptCachedDenoiser(dsl_inner, ids.shape[1]), ids, mask, gen_length=8, nfe=7,
                     generator=torch.Generator().manual_seed(0))
    assert a.nfe == b.nfe == 7 and dsl_inner.nfe == 14


def test_refresh_every_call_is_bit_identical_to_no_cache():
    model = _model()
    ids, mask = _left_padded()
    plain = mdm_generate(_seam(model), ids, mask, gen_length=8, steps=4)
    seam = PromptCachedDenoiser(_seam(model), ids.shape[1], refresh_every=1)
    assert torch.equal(mdm_generate(seam, ids, mask, gen_length=8, steps=4).tokens, plain.tokens)
    assert seam.cached_calls == 0
    every2 = PromptCachedDenoiser(_seam(model), ids.shape[1], refresh_every=2)
    mdm_generate(every2, ids, mask, gen_length=8, steps=4)
    assert (every2.full_calls, every2.cached_calls) == (2, 2)


# --------------------------------------------------------------------------- (d) only the approximation
def test_one_layer_model_is_exact_with_cache():
    # With one layer the prompt's keys / values depend on the prompt alone, so the cache loses
    # nothing: any difference would be a bug, not the approximation.
    from dslbench.diffusion.softmask import SoftMaskParams, softmask_embeds_fn

    model = _model(n_layers=1)
    ids, mask = _left_padded()
    P = ids.shape[1]
    for kwargs in ({}, {"cfg_scale": 1.0}, {"block_length": 4}):
        plain = mdm_generate(_seam(model), ids, mask, gen_length=8, steps=4, **kwargs)
        cached = mdm_generate(PromptCachedDenoiser(_seam(model), P), ids, mask, gen_length=8, steps=4, **kwargs)
        assert torch.equal(plain.tokens, cached.tokens), kwargs
    params = SoftMaskParams(scale=0.5)
    inner = _seam(model)
    plain = mdm_generate(inner, ids, mask, gen_length=8, steps=4, input_embeds_fn=softmask_embeds_fn(inner, params, 3))
    cached = mdm_generate(PromptCachedDenoiser(inner, P), ids, mask, gen_length=8, steps=4,
                          input_embeds_fn=softmask_embeds_fn(inner, params, 3))
    assert torch.equal(plain.tokens, cached.tokens)
    dsl = _dsl_seam(model)
    a = dsl_generate(dsl, ids, mask, gen_length=8, nfe=7, generator=torch.Generator().manual_seed(0))
    b = dsl_generate(PromptCachedDenoiser(dsl, P), ids, mask, gen_length=8, nfe=7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.tokens, b.tokens)


# --------------------------------------------------------------------------- backends: (c) default, records, (e) errors
GK = {"nfe": 4, "gen_length": 8, "return_stats": True, "until": []}
PROMPTS = ["summarize this please.", "a second, somewhat longer prompt with more words in it."]


def _generate(cls, ckpt, extra=""):
    backend = cls.create_from_arg_string(f"pretrained={ckpt},gen_length=8,nfe=4{extra}", {"batch_size": 2})
    return [split_stats(r) for r in backend.generate_until([Req(p, GK) for p in PROMPTS])]


@pytest.fixture(scope="module")
def one_layer_ckpts(tmp_path_factory):
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.models.dsl_checkpoint import save_dsl_checkpoint
    from dslbench.models.loading import load_llada
    from dslbench.models.tiny import make_tiny

    base = make_tiny(tmp_path_factory.mktemp("pc") / "one-layer", seed=0, n_layers=1)
    model, tokenizer, info = load_llada(base)
    dsl = DSLModules(info.vocab_size, 16, model.config.d_model, beta_init=2.0, noise_seed=7)
    dsl.init_from_backbone(model.get_input_embeddings().weight, info.mask_id)
    dsl_dir = save_dsl_checkpoint(model, dsl, tokenizer, tmp_path_factory.mktemp("pc") / "dsl", {"beta_train": 2.0})
    return {MDMLLaDA: base, SoftMaskLLaDA: base, DSLLLaDA: dsl_dir}


@pytest.mark.parametrize("cls", [MDMLLaDA, SoftMaskLLaDA, DSLLLaDA])
def test_backend_cache_off_by_default_and_recorded_when_on(cls, one_layer_ckpts):
    ckpt = one_layer_ckpts[cls]
    default = _generate(cls, ckpt)
    off = _generate(cls, ckpt, ",prompt_cache=false")
    on = _generate(cls, ckpt, ",prompt_cache=true")
    strip = lambda rows: [(t, {k: v for k, v in s.items() if k != "seconds"}) for t, s in rows]  # noqa: E731
    assert strip(default) == strip(off)
    assert all(not any(k.startswith("prompt_cache") for k in s) for _, s in default)
    for (text_off, s_off), (text_on, s_on) in zip(default, on):
        assert text_on == text_off  # one layer: the cache is exact
        assert s_on["nfe"] == s_off["nfe"] == 4
        assert s_on["prompt_cache"] is True and s_on["prompt_cache_full_calls"] == 1
        assert s_on["prompt_cache_cached_calls"] == 3


def test_backend_cache_on_two_layers_runs(tiny_ckpt):
    rows = _generate(MDMLLaDA, tiny_ckpt, ",prompt_cache=true,prompt_cache_refresh=2,cfg=0.5")
    for _, stats in rows:
        assert stats["nfe"] == 4 and stats["prompt_cache_refresh"] == 2
        assert stats["prompt_cache_full_calls"] + stats["prompt_cache_cached_calls"] == 4


@pytest.mark.parametrize("extra, message", [
    (",prompt_cache=maybe", r"prompt_cache='maybe': expected true or false"),
    (",prompt_cache=true,prompt_cache_refresh=-1", r"prompt_cache_refresh=-1 is not allowed; choose 0"),
    (",prompt_cache_refresh=2", r"prompt_cache_refresh=2 needs prompt_cache=true"),
    (",prompt_cache=true,prompt_cache_refresh=x", r"prompt_cache_refresh='x'"),
])
def test_bad_args_are_clear_errors(tiny_ckpt, extra, message):
    with pytest.raises(ValueError, match=message):
        MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}{extra}")


def test_dream_refuses_the_cache(tmp_path):
    from dslbench.models.tiny import make_tiny

    dream = make_tiny(tmp_path / "dream", seed=0, family="dream")
    MDMLLaDA.create_from_arg_string(f"pretrained={dream}")  # fine without the cache
    with pytest.raises(ValueError, match=r"prompt_cache=true is not supported for the dream family"):
        MDMLLaDA.create_from_arg_string(f"pretrained={dream},prompt_cache=true")
    with pytest.raises(ValueError, match="no prefix-cache forward"):
        from dslbench.models.loading import load_model

        model, _, info = load_model(str(dream))
        PromptCachedDenoiser(ModelDenoiser(model, info.mask_id, info.eos_id, (info.eos_id,), info.vocab_size, True), 4)
