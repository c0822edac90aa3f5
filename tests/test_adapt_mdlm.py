"""``dslbench adapt --objective mdm|softmask`` on an MDLM-format base: MDLM's released loss and
IBM's ``mdlm_sm`` two-pass step, each pinned against a re-implementation of the released step
written here (the released arithmetic, the same draws), and the written checkpoints in the
released layout, decoding in ``mdm_llada`` / ``softmask_llada``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dslbench.training.data import Batch
from dslbench.training.loop import AdaptConfig, run_adapt, step_generator
from dslbench.training.objectives import AdaptModule, ObjectiveError, make_objective

NEG_INF = -1_000_000.0  # the release's neg_infinity
EPS = 1e-3  # training.sampling_eps and LogLinearNoise's eps


def _module(ckpt, objective="mdm", **options):
    from dslbench.models.loading import load_model

    backbone, tokenizer, info = load_model(str(ckpt), dtype="float32", device="cpu")
    obj = make_objective(objective, **options)
    module = AdaptModule(backbone, obj.build(backbone, tokenizer, info, ckpt), obj, info)
    obj.configure_trainable(module)
    return module.eval(), obj, info  # eval: no dropout, so both sides see the same network


def _blocks(info, B=4, T=24, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, info.mask_id, (B, T), generator=g)
    ones = torch.ones(B, T, dtype=torch.long)
    return Batch(ids, ones, ones.bool())  # packed text blocks: every position is a response position


# ---- the released steps, re-implemented from kuleshov-group/mdlm diffusion.py and language/algo.py


def released_times(n, gen):
    """``_sample_t`` with antithetic sampling, then the log-linear noise (sigma form of diffusion.py)."""
    eps_t = torch.rand(n, generator=gen)
    eps_t = (eps_t / n + torch.arange(n) / n) % 1
    t = (1 - EPS) * eps_t + EPS
    sigma = -torch.log1p(-(1 - EPS) * t)  # total_noise
    dsigma = (1 - EPS) / (1 - (1 - EPS) * t)  # rate_noise
    return t, sigma, dsigma


def released_subs(logits, xt, mask_index):
    out = logits.float().clone()
    out[:, :, mask_index] += NEG_INF
    out = out - torch.logsumexp(out, dim=-1, keepdim=True)
    unmasked = xt != mask_index
    out[unmasked] = NEG_INF
    out[unmasked, xt[unmasked]] = 0
    return out


def released_loss(log_x_theta, x0, sigma, dsigma, attention_mask):
    log_p = torch.gather(log_x_theta, -1, x0[:, :, None]).squeeze(-1)
    loss = -log_p * (dsigma / torch.expm1(sigma))[:, None]
    return (loss * attention_mask).sum() / attention_mask.sum()


def released_mdlm_step(net, x0, mask_index, gen):
    t, sigma, dsigma = released_times(x0.shape[0], gen)
    move_chance = 1 - torch.exp(-sigma[:, None])
    xt = torch.where(torch.rand(*x0.shape, generator=gen) < move_chance, mask_index, x0)
    log_x_theta = released_subs(net(input_ids=xt).logits, xt, mask_index)  # sigma fed as zeros: the net's default
    return released_loss(log_x_theta, x0, sigma, dsigma, torch.ones_like(x0)), xt


def released_mdlm_sm_step(net, x0, mask_index, gen, scale, centre, steep, k, sm_prob, band):
    """``MDLM_SM.nll`` on its first step (no NLL EMA yet, so the plain centre), mixinputs_with_topk."""
    t, sigma, dsigma = released_times(x0.shape[0], gen)
    move_chance = 1 - torch.exp(-sigma[:, None])
    xt = torch.where(torch.rand(*x0.shape, generator=gen) < move_chance, mask_index, x0)
    gate = torch.rand(1, generator=gen).item() < sm_prob
    use = gate and band[0] <= t.mean().item() <= band[1]
    if not use:
        return released_loss(released_subs(net(input_ids=xt).logits, xt, mask_index), x0, sigma, dsigma,
                             torch.ones_like(x0)), use
    with torch.no_grad():
        pass1 = released_subs(net(input_ids=xt).logits, xt, mask_index)
    masked = xt == mask_index
    ml = pass1[masked]
    p = torch.softmax(ml, dim=-1)
    neg_entropy = (p * torch.log(p + 1e-10)).sum(-1)
    lam = torch.zeros(xt.shape)
    lam[masked] = scale * torch.sigmoid(steep * (neg_entropy - centre))
    top_logits, top_idx = torch.topk(ml, k, dim=-1)
    top_p = torch.softmax(top_logits.float(), dim=-1)
    idx = torch.zeros(*xt.shape, k, dtype=torch.long)
    probs = torch.zeros(*xt.shape, k)
    idx[masked], probs[masked] = top_idx, top_p
    lam = lam[..., None]
    final_idx = torch.cat([xt[..., None], idx], -1)
    final_p = torch.cat([1 - lam, lam * probs], -1)
    E = net.get_input_embeddings().weight
    embeds = (final_p[..., None] * E[final_idx]).sum(-2)  # the patched DiT embedding of (indices, probs)
    log_x_theta = released_subs(net(inputs_embeds=embeds).logits, xt, mask_index)
    return released_loss(log_x_theta, x0, sigma, dsigma, torch.ones_like(x0)), use


# ---- tests


@pytest.mark.parametrize("seed", [0, 5])
def test_mdm_on_mdlm_is_the_released_mdlm_loss(tiny_mdlm, seed):
    module, obj, info = _module(tiny_mdlm)
    batch = _blocks(info)
    ours = module(batch.input_ids, batch.attention_mask, batch.response_mask, step_generator(seed, 0, 0, 0))
    ref, xt = released_mdlm_step(module.backbone, batch.input_ids, info.mask_id, step_generator(seed, 0, 0, 0))
    assert ours.n_loss_tokens == int((xt == info.mask_id).sum()) > 0
    assert ours.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # the same gradients
    ours.loss.backward()
    g_ours = module.backbone.backbone.blocks[0].attn_qkv.weight.grad.clone()
    module.zero_grad()
    released_mdlm_step(module.backbone, batch.input_ids, info.mask_id, step_generator(seed, 0, 0, 0))[0].backward()
    assert torch.allclose(g_ours, module.backbone.backbone.blocks[0].attn_qkv.weight.grad, rtol=1e-4, atol=1e-7)


def test_the_llada_loss_would_differ(tiny_mdlm):
    """The MDLM loss is not LLaDA's on the same draws (mask rate, 1/t vs 1/p, SUBS, normalisation)."""
    from dslbench.training.mdm_objective import mdm_corrupt, mdm_loss

    module, obj, info = _module(tiny_mdlm)
    batch = _blocks(info)
    ours = module(batch.input_ids, batch.attention_mask, batch.response_mask, step_generator(1, 0, 0, 0)).loss
    noisy, masked, p = mdm_corrupt(batch.input_ids, batch.response_mask, info.mask_id, step_generator(1, 0, 0, 0))
    llada = mdm_loss(module.logits(input_ids=noisy), batch.input_ids, masked, p, batch.response_mask)
    assert not math.isclose(ours.item(), llada.item(), rel_tol=1e-3)


def test_prompt_and_pads_stay_clean_and_out_of_the_loss(tiny_mdlm):
    module, obj, info = _module(tiny_mdlm, mdm_loss_weight="none")
    ids = torch.randint(0, info.mask_id, (3, 16), generator=torch.Generator().manual_seed(0))
    resp = torch.zeros(3, 16, dtype=torch.bool)
    resp[:, 8:] = True
    from dslbench.training.mdlm_loss import mdlm_corrupt, mdlm_loss

    noisy, masked, t = mdlm_corrupt(ids, resp, info.mask_id, step_generator(2, 0, 0, 0))
    assert not bool(masked[:, :8].any()) and bool(masked.any())
    logits = module.logits(input_ids=noisy)
    loss = mdlm_loss(logits, ids, masked, t, resp, info.mask_id, "none")
    manual = F.cross_entropy(logits[masked].float().index_fill(-1, torch.tensor([info.mask_id]), -math.inf),
                             ids[masked], reduction="sum") / int(resp.sum())
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("scale", [0.6, 1e-6])
def test_softmask_on_mdlm_is_the_released_mdlm_sm_step(tiny_mdlm, scale):
    # centre near the random model's entropy (~log V): lambda ~ scale / 2, so the blend matters
    module, obj, info = _module(tiny_mdlm, "softmask", softmask_prob=1.0, softmask_init_scale=scale,
                                softmask_init_centre=-6.0, softmask_init_steepness=1.0)
    assert obj.k == 3 and obj.band == (0.2, 0.8)  # mdlm_sm.yaml / language/ config
    with torch.no_grad():  # a loud [MASK] logit: only SUBS keeps it out of the first pass's top-k
        module.backbone.backbone.output_layer.linear.bias[info.mask_id] += 20.0
    batch = _blocks(info)
    ours = module(batch.input_ids, batch.attention_mask, batch.response_mask, step_generator(4, 0, 0, 0))
    v = module.extras["softmask"].values()
    ref, used = released_mdlm_sm_step(module.backbone, batch.input_ids, info.mask_id, step_generator(4, 0, 0, 0),
                                      v["scale"], v["centre"], v["steepness"], 3, 1.0, (0.2, 0.8))
    assert used and ours.metrics["softmask_passes"] == 2.0
    # 1e-10 inside the release's entropy log, exact entropy here: equal to float32 rounding
    assert ours.loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_softmask_band_and_gate(tiny_mdlm):
    # a band no batch-mean time reaches: the plain MDLM step, bit for bit
    module, obj, info = _module(tiny_mdlm, "softmask", softmask_prob=1.0, softmask_t_band="0.9,1")
    plain, _, _ = _module(tiny_mdlm)
    batch = _blocks(info)
    a = module(batch.input_ids, batch.attention_mask, batch.response_mask, step_generator(4, 0, 0, 0))
    b = plain(batch.input_ids, batch.attention_mask, batch.response_mask, step_generator(4, 0, 0, 0))
    assert a.metrics["softmask_passes"] == 1.0 and a.loss.item() == b.loss.item()
    for bad in ("0.8,0.2", "x", "0,2"):
        with pytest.raises(ObjectiveError, match="--softmask-t-band"):
            make_objective("softmask", softmask_t_band=bad)


def _cfg(base, out, objective, **options):
    return AdaptConfig(base=str(base), out=str(out), objective=objective, objective_options=options, data="synth",
                       seq_len=48, batch_size=2, max_steps=2, lr=1e-3, warmup_steps=0, device="cpu", progress=False,
                       save_every=0)


def test_adapted_checkpoints_keep_the_released_layout_and_decode(tiny_mdlm, tmp_path):
    from safetensors import safe_open

    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    def keys(path):
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    base = keys(tiny_mdlm)
    for objective, backend in (("mdm", MDMLLaDA), ("softmask", SoftMaskLLaDA)):
        out = tmp_path / objective
        run_adapt(_cfg(tiny_mdlm, out, objective))
        got = keys(out)
        assert set(got) == set(base) and all(k.startswith("backbone.") for k in got)
        assert not torch.equal(got["backbone.blocks.0.attn_qkv.weight"], base["backbone.blocks.0.attn_qkv.weight"])
        import json

        cfg = json.loads((out / "config.json").read_text())
        assert cfg["model_type"] == "mdlm" and cfg["time_conditioning"] is False
        lm = backend(pretrained=str(out), device="cpu", batch_size=2)  # sampler=auto: ddpm_cache on MDLM
        assert lm.info.family == "mdlm"
        if objective == "softmask":
            assert lm.checkpoint_k == 3 and lm.softmask_source == "checkpoint"
