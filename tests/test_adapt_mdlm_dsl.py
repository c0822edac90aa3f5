"""``dslbench adapt --objective dsl`` on an MDLM-format base: the DSL step through the DiT (the
converter's output as ``inputs_embeds``, the adaLN conditioning the base's constant), the frozen
unembedding, and the checkpoint (mdlm-owt layout + ``dsl.safetensors``) decoding in ``dsl_llada``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dslbench.training.data import Batch
from dslbench.training.loop import AdaptConfig, run_adapt, step_generator
from dslbench.training.objectives import AdaptModule, ObjectiveError, head_parameters, make_objective


def _module(ckpt, **options):
    from dslbench.models.loading import load_model

    backbone, tokenizer, info = load_model(str(ckpt), dtype="float32", device="cpu")
    obj = make_objective("dsl", noise_dim=16, **options)
    module = AdaptModule(backbone, obj.build(backbone, tokenizer, info, ckpt), obj, info)
    obj.configure_trainable(module)
    return module.eval(), info


def _batch(info, B=3, T=20):
    ids = torch.randint(0, info.mask_id, (B, T), generator=torch.Generator().manual_seed(1))
    am = torch.ones(B, T, dtype=torch.long)
    am[0, :3] = 0  # a left-padded row
    resp = torch.zeros(B, T, dtype=torch.bool)
    resp[:, 12:] = True
    return Batch(ids, am, resp)


def test_dsl_step_through_the_dit(tiny_mdlm):
    """The released DSL step, re-done by hand on the DiT: SNR draws, channel, converter at every real
    position, the DiT on inputs_embeds with sigma = 0, token-mean CE on the response."""
    from dslbench.diffusion.dsl import channel, sample_training_snr
    from dslbench.training.dsl_objective import place_response_values

    module, info = _module(tiny_mdlm)
    dsl, net = module.extras["dsl"], module.backbone
    batch = _batch(info)
    out = module(batch.input_ids, batch.attention_mask, batch.response_mask, step_generator(0, 0, 0, 0))

    gen = step_generator(0, 0, 0, 0)
    real = batch.attention_mask.bool()
    snr = place_response_values(sample_training_snr(3, int(real.sum(1).max()), generator=gen), real)
    z = channel(batch.input_ids[real][None], snr[real][None], dsl.noise_embed.weight, generator=gen)[0]
    inputs = net.backbone.vocab_embed(batch.input_ids).clone()
    inputs[real] = dsl.convert(z.float(), out_dtype=torch.float32)
    logits = net(inputs_embeds=inputs, attention_mask=batch.attention_mask,
                 timesteps=torch.zeros(3)).logits  # the base's adaLN input: sigma = 0
    resp = batch.response_mask
    masked = logits.clone()
    masked[..., info.mask_id] = float("-inf")  # [MASK] is never a prediction on MDLM
    ref = F.cross_entropy(masked[resp].float(), batch.input_ids[resp])
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # the conditioning is the base's constant: any noise level fed to sigma_map changes nothing
    assert torch.equal(logits, net(inputs_embeds=inputs, attention_mask=batch.attention_mask,
                                   timesteps=torch.full((3,), 5.0)).logits)


def test_trainable_parameters_and_init(tiny_mdlm):
    module, info = _module(tiny_mdlm)
    head = head_parameters(module.backbone)
    linear = module.backbone.backbone.output_layer.linear
    assert {id(p) for p in head} == {id(linear.weight), id(linear.bias)}
    assert not any(p.requires_grad for p in head)  # the unembedding is frozen, as LLaDA's ff_out
    assert module.backbone.backbone.output_layer.norm_final.weight.requires_grad
    assert module.backbone.backbone.sigma_map.mlp[0].weight.requires_grad
    dsl = module.extras["dsl"]
    assert not dsl.noise_embed.weight.requires_grad
    E = module.backbone.get_input_embeddings().weight
    W = dsl.converter.backbone_embedding.weight
    assert torch.equal(W[:, : info.vocab_size], E.T) and torch.equal(W[:, info.vocab_size], E[info.mask_id])
    with pytest.raises(ObjectiveError, match="--head-lora-rank is not available on an MDLM-format base"):
        _module(tiny_mdlm, head_lora_rank=2)


def test_checkpoint_layout_decodes_and_continues(tiny_mdlm, tmp_path):
    from safetensors import safe_open

    from dslbench.harness.dsl_backend import DSLLLaDA
    from dslbench.models.dsl_checkpoint import DSL_KEYS

    def keys(path):
        with safe_open(str(path), "pt") as f:
            return set(f.keys())

    def cfg(out, steps):
        return AdaptConfig(base=str(tiny_mdlm), out=str(out), objective="dsl", objective_options={"noise_dim": 16},
                           data="synth", seq_len=48, batch_size=2, max_steps=steps, lr=1e-3, warmup_steps=0,
                           device="cpu", progress=False, save_every=0)

    out = tmp_path / "dsl"
    run_adapt(cfg(out, 2))
    assert keys(out / "model.safetensors") == keys(tiny_mdlm / "model.safetensors")  # the mdlm-owt keys only
    assert keys(out / "dsl.safetensors") == set(DSL_KEYS)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mdlm" and config["architectures"] == ["MDLM"]
    record = json.loads((out / "adapt_config.json").read_text())["objective_config"]
    assert any(c.startswith("adaLN conditioning") for c in record["mdlm_open_choices"])
    stored = json.loads((out / "dsl_config.json").read_text())
    assert stored["d_model"] == config["hidden_dim"] and stored["mask_token_id"] == config["vocab_size"] - 1

    lm = DSLLLaDA(pretrained=str(out), device="cpu")
    assert lm.info.family == "mdlm" and lm.dsl_config["noise_dim"] == 16

    class Req:
        args = ("", {"until": [], "gen_length": 8, "nfe": 4, "return_stats": True, "prompt_format": "none",
                     "response_cut": "keep"})
        repeats = 1

    from dslbench.metrics.sample_stats import split_stats

    stats = split_stats(lm.generate_until([Req()], disable_tqdm=True)[0])[1]
    assert stats["nfe"] <= 4 and len(stats["gen_ids"]) == 8

    # a DSL checkpoint of this layout is a base the dsl objective continues
    more = tmp_path / "more"
    run_adapt(AdaptConfig(**{**cfg(more, 1).__dict__, "base": str(out)}))
    assert json.loads((more / "adapt_config.json").read_text())["objective_config"]["continued_from_dsl_checkpoint"] is True
