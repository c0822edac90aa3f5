"""The released DSL-LLaDA training recipe as the default of ``adapt --objective dsl``, and the
soft-masking release's optimiser rules: hand-computed loss reduction on ragged rows, which
parameters decay, the prompt noised with its row's SNR draw, the head LoRA adapter (trains only
A / B, saved in the published layout, reloads), the converter's gradient scale and bias init."""

from __future__ import annotations

import math

import pytest
import torch

from dslbench.training.data import TokenIds, collate_pairs, encode_pairs
from dslbench.training.objectives import AdaptModule, ObjectiveError, make_objective, response_token_loss
from tests.spies import capture_logits


@pytest.fixture(scope="module")
def tiny_dir(tiny_ckpt):
    return tiny_ckpt


def _module(path, name: str = "dsl", seed: int = 0, **options):
    from dslbench.models.loading import load_model

    torch.manual_seed(seed)
    model, tokenizer, info = load_model(path, dtype="float32", device="cpu")
    objective = make_objective(name, **options)
    module = AdaptModule(model, objective.build(model, tokenizer, info), objective, info)
    objective.configure_trainable(module)
    return module.train(), tokenizer, info


def _batch(tokenizer, info, n=3):
    from dslbench.data.synth import make_summarization_examples

    rows = make_summarization_examples(n, seed=0, split="train")
    ids = TokenIds.from_tokenizer(tokenizer, info)
    pairs = encode_pairs([(r["document"], r["summary"]) for r in rows], tokenizer, ids)
    return collate_pairs(pairs, ids, seq_len=512, response_len=12)


# ------------------------------------------------------------------------------------------------
# loss reduction


def test_token_mean_and_row_mean_on_ragged_rows_by_hand():
    # Row 0: 3 response positions with CE 0.2, 0.4, 0.6; row 1: 1 position with CE 1.0.
    resp = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    ce = torch.tensor([0.2, 0.4, 0.6, 1.0])
    assert response_token_loss(ce, resp, "tokens").item() == pytest.approx(2.2 / 4)  # released: 0.55
    assert response_token_loss(ce, resp, "rows").item() == pytest.approx((0.4 + 1.0) / 2)  # 0.7
    with pytest.raises(ObjectiveError, match="dsl-loss-norm"):
        response_token_loss(ce, resp, "mean")


@pytest.mark.parametrize("norm", ["tokens", "rows"])
def test_dsl_loss_reduces_the_response_cross_entropy_of_ragged_rows(tiny_dir, norm):
    module, tokenizer, info = _module(tiny_dir, noise_dim=8, dsl_loss_norm=norm)
    batch = _batch(tokenizer, info)
    batch.response_mask[0, batch.response_mask[0].nonzero()[:5, 0]] = False  # row 0: 5 fewer loss tokens
    captured = capture_logits(module)
    with torch.no_grad():
        out = module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(1))
    resp = batch.response_mask
    ce = torch.nn.functional.cross_entropy(captured["logits"][resp].float(), batch.input_ids[resp], reduction="none")
    lengths = resp.sum(dim=1).tolist()
    assert lengths[0] != lengths[1]
    if norm == "tokens":
        expected = ce.sum().item() / sum(lengths)
    else:
        per_row = torch.split(ce, lengths)
        expected = sum(c.mean().item() for c in per_row) / len(lengths)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# weight decay


def _group_names(module, groups):
    names = {id(p): n for n, p in module.named_parameters()}
    return {g["name"]: ({names[id(p)] for p in g["params"]}, g["weight_decay"], g["lr"]) for g in groups}


def test_released_trainer_rule_decays_all_but_biases_and_norms(tiny_dir):
    module, _, _ = _module(tiny_dir, noise_dim=8)
    groups = _group_names(module, module.objective.param_groups(module, 2e-5, 0.1))
    decay, wd, _ = groups["decay"]
    no_decay, wd0, _ = groups["no_decay"]
    assert (wd, wd0) == (0.1, 0.0)
    t = "backbone.model.transformer."
    for name in (t + "wte.weight", t + "ln_f.weight", t + "blocks.0.q_proj.weight", t + "blocks.1.ff_out.weight",
                 "extras.dsl.converter.beta", "extras.dsl.converter.backbone_embedding.weight"):
        assert name in decay, name
    for name in (t + "blocks.0.attn_norm.weight", t + "blocks.1.ff_norm.weight",
                 "extras.dsl.converter.logit_bias", "extras.dsl.converter.backbone_embedding.bias"):
        assert name in no_decay, name
    # Frozen tensors are in no group: the noise embedding and the output head.
    everything = decay | no_decay
    assert "extras.dsl.noise_embed.weight" not in everything and t + "ff_out.weight" not in everything
    n_trainable = sum(1 for p in module.parameters() if p.requires_grad)
    assert len(everything) == n_trainable


def test_matrices_and_none_rules(tiny_dir):
    module, _, _ = _module(tiny_dir, noise_dim=8, weight_decay_params="matrices")
    groups = _group_names(module, module.objective.param_groups(module, 2e-5, 0.1))
    assert "extras.dsl.converter.beta" in groups["no_decay"][0]
    assert "backbone.model.transformer.ln_f.weight" in groups["no_decay"][0]
    module, _, _ = _module(tiny_dir, noise_dim=8, weight_decay_params="none")
    groups = module.objective.param_groups(module, 2e-5, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.0]
    with pytest.raises(ObjectiveError, match="weight-decay-params"):
        make_objective("dsl", weight_decay_params="all")


def test_softmask_release_decays_nothing_and_trains_the_scalars_at_1e_2(tiny_dir):
    module, _, _ = _module(tiny_dir, "softmask")
    groups = module.objective.param_groups(module, 1e-5, 0.1)
    assert all(g["weight_decay"] == 0.0 for g in groups)
    scalars = [g for g in groups if g["name"] == "softmask"]
    assert len(scalars) == 1 and scalars[0]["lr"] == 1e-2 and len(scalars[0]["params"]) == 3
    assert module.objective.prob == 0.5 and module.objective.per == "batch"


# ------------------------------------------------------------------------------------------------
# the prompt enters noised, with its row's SNR draw


def test_prompt_is_noised_with_the_row_snr_and_pads_are_not(tiny_dir, monkeypatch):
    import dslbench.diffusion.dsl as dsl_mod

    module, tokenizer, info = _module(tiny_dir, noise_dim=8, roar_prob=0.0, lognormal_per="sequence")
    batch = _batch(tokenizer, info)
    seen = {}
    original = dsl_mod.channel

    def spy(ids, snr, noise, generator=None):
        seen["ids"], seen["snr"] = ids.clone(), torch.as_tensor(snr).clone()
        return original(ids, snr, noise, generator)

    monkeypatch.setattr(dsl_mod, "channel", spy)
    with torch.no_grad():
        module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(2))
    real = batch.attention_mask.bool()
    assert (~real).any()  # the batch has pads, and they are not noised
    assert torch.equal(seen["ids"][0], batch.input_ids[real])
    snr = seen["snr"][0]
    lengths = real.sum(dim=1).tolist()
    for row in torch.split(snr, lengths):  # one log-normal draw per row covers prompt and response
        assert row.min().item() == row.max().item() > 0


# ------------------------------------------------------------------------------------------------
# options of the released scripts


def test_head_lora_trains_only_a_b_saves_the_published_layout_and_reloads(tiny_dir, tmp_path):
    from dslbench.models.dsl_checkpoint import LORA_KEYS, load_dsl_checkpoint
    from dslbench.models.saving import read_weights

    module, tokenizer, info = _module(tiny_dir, noise_dim=8, head_lora_rank=4, head_lora_alpha=8.0)
    head = module.backbone.get_output_embeddings()
    assert not head.base.weight.requires_grad and head.lora_A.requires_grad and head.lora_B.requires_grad
    assert head.lora_A.shape == (head.base.weight.shape[1], 4) and head.lora_B.shape == (4, head.base.weight.shape[0])
    assert head.lora_B.abs().max().item() == 0.0  # starts from the base head exactly
    base_before = head.base.weight.detach().clone()

    batch = _batch(tokenizer, info, n=2)
    groups = module.objective.param_groups(module, 1e-2, 0.0)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    for step in range(2):
        out = module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(step))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(head.base.weight, base_before)
    assert head.lora_B.abs().max().item() > 0

    out_dir = module.objective.save_final(module, tokenizer, info, tmp_path / "ckpt", {"steps": 2})
    weights = read_weights(out_dir)
    assert set(LORA_KEYS) <= set(weights) and "model.transformer.ff_out.weight" not in weights
    assert torch.equal(weights[LORA_KEYS[1]], head.lora_A.detach())
    model, _, _, _, cfg = load_dsl_checkpoint(out_dir, dtype="float32", device="cpu")
    assert cfg["ffout_lora"] == {"rank": 4, "alpha": 8.0, "scale": 2.0, "merged": True}
    merged = base_before + 2.0 * (head.lora_A @ head.lora_B).T
    assert torch.allclose(model.get_output_embeddings().weight, merged.detach(), atol=1e-6)
    x = torch.randn(3, head.base.weight.shape[1])
    with torch.no_grad():
        assert torch.allclose(model.get_output_embeddings()(x), head(x), atol=1e-5)


def test_head_lora_conflicts_with_a_trained_head():
    with pytest.raises(ObjectiveError, match="freeze-head no"):
        make_objective("dsl", head_lora_rank=32, freeze_head="no")
    with pytest.raises(ObjectiveError, match="head-lora-rank"):
        make_objective("dsl", head_lora_rank=-1)


def test_converter_grad_scale_multiplies_only_the_converter_gradients(tiny_dir):
    batch = None
    grads = []
    for scale in (1.0, 3.0):
        module, tokenizer, info = _module(tiny_dir, noise_dim=8, converter_grad_scale=scale)
        batch = batch or _batch(tokenizer, info, n=2)
        out = module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(5))
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
    plain, scaled = grads
    assert plain.keys() == scaled.keys()
    for name in plain:
        factor = 3.0 if name.startswith("extras.dsl.converter.") else 1.0
        assert torch.allclose(scaled[name], factor * plain[name], rtol=1e-5, atol=1e-9), name
    with pytest.raises(ObjectiveError, match="converter-grad-scale"):
        make_objective("dsl", converter_grad_scale=0.0)


def test_converter_bias_keeps_the_linear_default_init_unless_zero(tiny_dir):
    module, _, info = _module(tiny_dir, noise_dim=8)
    bias = module.extras["dsl"].converter.backbone_embedding.bias.detach()
    bound = 1.0 / math.sqrt(info.vocab_size + 1)
    assert bias.abs().max().item() <= bound and bias.abs().min().item() > 0
    assert bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.5)
    module, _, _ = _module(tiny_dir, noise_dim=8, converter_bias_init="zero")
    assert module.extras["dsl"].converter.backbone_embedding.bias.abs().max().item() == 0.0


def test_released_options_resume_bit_identically_and_load(tiny_dir, tmp_path):
    from dslbench.models.dsl_checkpoint import LORA_KEYS, load_dsl_checkpoint
    from dslbench.models.saving import read_weights
    from dslbench.training.loop import AdaptConfig, run_adapt

    def cfg(out, steps, resume=False):
        options = {"noise_dim": 8, "head_lora_rank": 4, "converter_grad_scale": 25.0}
        return AdaptConfig(base=str(tiny_dir), out=str(out), objective="dsl", data="synth:16", max_steps=steps,
                           batch_size=4, seq_len=96, response_len=16, warmup_steps=0, lr=3e-3, save_every=2,
                           progress=False, seed=0, resume=resume, objective_options=options)

    run_adapt(cfg(tmp_path / "ref", 4))
    run_adapt(cfg(tmp_path / "split", 2))
    run_adapt(cfg(tmp_path / "split", 4, resume=True))
    ref, split = (read_weights(tmp_path / d) for d in ("ref", "split"))
    assert sorted(ref) == sorted(split) and set(LORA_KEYS) <= set(ref)
    assert all(torch.equal(ref[k], split[k]) for k in ref)
    model, _, _, _, dsl_cfg = load_dsl_checkpoint(tmp_path / "ref", dtype="float32", device="cpu")
    assert dsl_cfg["ffout_lora"]["rank"] == 4 and dsl_cfg["ffout_lora_alpha"] == 128.0
    assert dsl_cfg["adapt"]["seed"] == 0
