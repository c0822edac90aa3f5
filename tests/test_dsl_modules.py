"""DSL modules: noise embedding, channel, converter, training SNR schedule (DESIGN.md, DSL)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from dslbench.diffusion.dsl import (
    DSLModules,
    channel,
    make_noise_embedding,
    sample_training_snr,
)


def test_noise_embedding_is_unit_norm_and_seeded():
    e = make_noise_embedding(50, 100, seed=3)
    assert e.shape == (50, 100) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(50))
    assert torch.equal(e, make_noise_embedding(50, 100, seed=3))
    assert not torch.equal(e, make_noise_embedding(50, 100, seed=4))


def test_state_dict_has_exactly_the_published_keys_and_noise_is_frozen():
    dsl = DSLModules(vocab_size=40, noise_dim=8, d_model=12, beta_init=2.5, noise_seed=1)
    shapes = {k: tuple(v.shape) for k, v in dsl.state_dict().items()}
    assert shapes == {
        "noise_embed.weight": (40, 8),
        "converter.logit_bias": (41,),
        "converter.backbone_embedding.weight": (12, 41),
        "converter.backbone_embedding.bias": (12,),
        "converter.beta": (),
    }
    assert not dsl.noise_embed.weight.requires_grad
    assert torch.equal(dsl.noise_embed.weight, make_noise_embedding(40, 8, seed=1))
    trainable = dsl.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in dsl.converter.parameters()} and len(trainable) == 4
    assert dsl.beta == 2.5
    bias = dsl.converter.logit_bias.detach()
    assert torch.all(bias[:40] == 0) and bias[40].item() == pytest.approx(math.log(40))


def test_init_from_backbone_uses_token_rows_and_the_mask_row():
    emb = torch.randn(45, 12)  # embedding table may be padded beyond the DSL vocabulary
    dsl = DSLModules(40, 8, 12)
    dsl.init_from_backbone(emb, mask_id=42)
    w = dsl.converter.backbone_embedding.weight.detach()  # [D, V+1]
    assert torch.equal(w[:, :40], emb[:40].T) and torch.equal(w[:, 40], emb[42])
    assert torch.all(dsl.converter.backbone_embedding.bias == 0)
    with pytest.raises(ValueError, match="rows"):
        dsl.init_from_backbone(torch.randn(30, 12), mask_id=3)


@pytest.mark.parametrize("snr", [0.5, 4.0, 30.0])
def test_channel_mean_and_variance(snr):
    n, d = 20000, 8
    emb = make_noise_embedding(5, d, seed=0)
    ids = torch.full((1, n), 2)
    g = torch.Generator().manual_seed(0)
    z = channel(ids, torch.full((1, n), snr), emb, generator=g)[0]  # [n, d]
    mean, var = z.mean(0), z.var(0)
    se = math.sqrt(snr / n)
    assert torch.all((mean - snr * emb[2]).abs() < 5 * se)
    # per-dimension variance g; relative standard error of a sample variance is sqrt(2/n)
    assert torch.all((var / snr - 1).abs() < 6 * math.sqrt(2 / n))


def test_channel_accepts_per_token_and_per_row_snr_and_is_seeded():
    emb = make_noise_embedding(6, 4)
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])
    snr = torch.tensor([[0.0, 1.0, 9.0], [2.0, 0.0, 50.0]])
    a = channel(ids, snr, emb, torch.Generator().manual_seed(1))
    b = channel(ids, snr, emb, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 3, 4)
    assert torch.all(a[0, 0] == 0) and torch.all(a[1, 1] == 0)  # SNR 0: z = 0 exactly
    per_row = channel(ids, torch.tensor([0.0, 0.0]), emb)
    assert torch.all(per_row == 0)
    with pytest.raises(ValueError, match=">= 0"):
        channel(ids, -snr, emb)


def test_snr_zero_gives_the_mask_state():
    """At SNR 0, z = 0, so every token slot scores 0 and the converter logits are just the bias:
    with b = 0 on the V token slots and b_mask = log V, the mask slot gets exactly
    V / (V + V) = 1/2 of the mass and each token 1 / (2V). The converter output is therefore
    *not* the bare [MASK] row but h(0) = 1/2 W[mask] + 1/2 mean_x W[x] + c (c = the linear bias):
    the mask slot is the single most likely slot by a factor V, and h(0) becomes the [MASK] row
    exactly only as b_mask - log V -> infinity (checked below with b_mask = log V + 30)."""
    v, d, dm = 30, 8, 6
    dsl = DSLModules(v, d, dm, beta_init=3.0)
    wte = torch.randn(v + 2, dm)
    dsl.init_from_backbone(wte, mask_id=v + 1)
    with torch.no_grad():
        dsl.converter.backbone_embedding.bias.copy_(torch.randn(dm))
    ids = torch.randint(0, v, (2, 5))
    z = channel(ids, torch.zeros(2, 5), dsl.noise_embedding)
    assert torch.all(z == 0)
    p = dsl.slot_probs(z, beta_scale=2.0)
    torch.testing.assert_close(p[..., v], torch.full((2, 5), 0.5))
    torch.testing.assert_close(p[..., :v], torch.full((2, 5, v), 1 / (2 * v)))
    assert torch.all(p.argmax(-1) == v)
    h = dsl.convert(z, beta_scale=2.0)
    c = dsl.converter.backbone_embedding.bias.detach()
    expected = 0.5 * wte[v + 1] + 0.5 * wte[:v].mean(0) + c
    torch.testing.assert_close(h, expected.expand(2, 5, dm), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        dsl.converter.logit_bias[v] = math.log(v) + 30.0
    torch.testing.assert_close(dsl.convert(z), (wte[v + 1] + c).expand(2, 5, dm), rtol=1e-5, atol=1e-5)


def test_high_snr_converter_output_approaches_the_true_token_embedding():
    v, d, dm = 50, 100, 16
    dsl = DSLModules(v, d, dm, beta_init=2.0)
    wte = torch.randn(v + 1, dm)
    dsl.init_from_backbone(wte, mask_id=v)
    ids = torch.arange(v)[None]
    # (a generator seeded like the noise embedding would draw eps parallel to E_n's rows)
    g = torch.Generator().manual_seed(123)
    errors = []
    for snr in (1.0, 10.0, 400.0):
        h = dsl.convert(channel(ids, torch.full((1, v), snr), dsl.noise_embedding, g), beta_scale=2.0)
        errors.append(((h[0] - wte[:v]).norm(dim=-1) / wte[:v].norm(dim=-1)).mean().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_convert_is_float32_inside_casts_out_and_trains_only_the_converter():
    dsl = DSLModules(20, 4, 8)
    z = torch.randn(2, 3, 4, requires_grad=False)
    h = dsl.convert(z, out_dtype=torch.bfloat16)
    assert h.dtype == torch.bfloat16 and h.shape == (2, 3, 8)
    loss = dsl.convert(z).square().sum()
    loss.backward()
    assert dsl.noise_embed.weight.grad is None
    assert all(p.grad is not None for p in dsl.trainable_parameters())
    with pytest.raises(ValueError, match="last dimension"):
        dsl.convert(torch.zeros(1, 1, 5))


def test_convert_and_its_gradients_equal_the_slot_softmax_formula():
    """The converter never builds the V+1 slot probabilities (inference and training take
    different shortcuts); both must give the value and every parameter's gradient of the plain
    formula ``F.linear(softmax(beta z K^T + b), W, c)``."""
    v, d, dm = 40, 6, 5
    torch.manual_seed(3)
    dsl = DSLModules(v, d, dm, beta_init=1.7)
    with torch.no_grad():
        dsl.converter.logit_bias.add_(torch.randn(v + 1))
        dsl.converter.backbone_embedding.bias.copy_(torch.randn(dm))
    z = torch.randn(3, 4, d) * 2
    upstream = torch.randn(3, 4, dm)

    def value_and_grads(fn):
        dsl.zero_grad(set_to_none=True)
        h = fn()
        (h * upstream).sum().backward()
        return h.detach(), [p.grad.clone() for p in dsl.trainable_parameters()]

    conv = dsl.converter

    def formula():  # written out here, not the project's slot_probs: K = [E_n; 0], scale 2
        keys = torch.cat([dsl.noise_embed.weight, torch.zeros(1, d)], dim=0)
        probs = torch.softmax(conv.beta * 2.0 * (z @ keys.T) + conv.logit_bias, dim=-1)
        return torch.nn.functional.linear(probs, conv.backbone_embedding.weight, conv.backbone_embedding.bias)

    oracle = value_and_grads(formula)
    fast = value_and_grads(lambda: dsl.convert(z, beta_scale=2.0))
    torch.testing.assert_close(fast[0], oracle[0], rtol=1e-5, atol=1e-6)
    for got, want in zip(fast[1], oracle[1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(dsl.convert(z, beta_scale=2.0), oracle[0], rtol=1e-5, atol=1e-6)


def test_training_snr_schedule_matches_its_parameters():
    batch, length = 40000, 8
    snr, is_roar = sample_training_snr(batch, length, torch.Generator().manual_seed(0), return_roar=True)
    assert snr.shape == (batch, length) and snr.dtype == torch.float32
    # ROAR share: binomial(batch, 0.1)
    share = is_roar.float().mean().item()
    assert abs(share - 0.1) < 5 * math.sqrt(0.09 / batch)

    roar = snr[is_roar]
    revealed = roar >= 1.0
    assert torch.all(roar[revealed] >= 80.0) and torch.all(roar[revealed] <= 100.0)
    assert torch.all(roar[~revealed] >= 0.0) and torch.all(roar[~revealed] < 1.0)
    k = revealed.sum(1).float()  # k ~ U{0..L-1}: mean (L-1)/2, variance (L^2-1)/12
    assert abs(k.mean().item() - (length - 1) / 2) < 5 * math.sqrt((length**2 - 1) / 12 / len(k))
    assert k.max().item() == length - 1 and k.min().item() == 0

    log_g = snr[~is_roar].log().flatten()
    n = log_g.numel()
    cap = math.log(40.0)
    clamped = (snr[~is_roar] == 40.0).float().mean().item()
    p_clamp = 1 - norm.cdf((cap - 1.69) / 0.9)
    assert abs(clamped - p_clamp) < 5 * math.sqrt(p_clamp * (1 - p_clamp) / n)
    assert snr[~is_roar].max().item() == 40.0
    # Quantiles of N(1.69, 0.9^2) below the clamp.
    for q in (-1.0, 0.0, 1.0):
        frac = (log_g < 1.69 + q * 0.9).float().mean().item()
        assert abs(frac - norm.cdf(q)) < 5 * math.sqrt(0.25 / n)
    # Mean and variance of the un-clamped part match a normal truncated at log 40.
    kept = log_g[log_g < cap - 1e-6]
    beta_ = (cap - 1.69) / 0.9
    lam = norm.pdf(beta_) / norm.cdf(beta_)
    t_mean = 1.69 - 0.9 * lam
    t_var = 0.81 * (1 - beta_ * lam - lam**2)
    assert abs(kept.mean().item() - t_mean) < 5 * math.sqrt(t_var / kept.numel())
    assert abs(kept.var().item() / t_var - 1) < 0.03


def test_training_snr_is_seeded_and_per_sequence_mode_broadcasts():
    a = sample_training_snr(64, 10, torch.Generator().manual_seed(5))
    b = sample_training_snr(64, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    snr, is_roar = sample_training_snr(
        2000, 6, torch.Generator().manual_seed(1), lognormal_per="sequence", return_roar=True
    )
    rows = snr[~is_roar]
    assert torch.all(rows == rows[:, :1])
    only_lognormal = sample_training_snr(100, 4, torch.Generator().manual_seed(2), roar_prob=0.0)
    assert only_lognormal.max().item() <= 40.0
    with pytest.raises(ValueError, match="lognormal_per"):
        sample_training_snr(2, 2, lognormal_per="row")
