"""Re-implementations, written for the tests, of the released MDLM code the suite must match.

- :class:`ReleasedDiT`: the DiT forward of kuleshov-group/mdlm ``models/dit.py`` / the hub's
  ``modeling_mdlm.py`` (module tree ``backbone.*`` with the released key names). flash_attn's
  varlen kernel is replaced by plain softmax attention written out (no SDPA), and its rotary
  kernel by the rotate-half formula on q and k (v untouched), as the release's cos/sin tables
  with v's rows set to identity do.
- :func:`released_sample`: ``_sample`` with ``predictor=ddpm_cache`` and
  ``_ddpm_caching_update`` of kuleshov-group/remdm ``diffusion.py`` (samplers mdlm, remdm-cap,
  remdm-rescale, remdm-conf, remdm-loop), on full ``[B, L, V]`` tensors, with the uniforms of
  ``_sample_categorical`` drawn from a given generator instead of torch's global one.

Kept deliberately literal (no sharing with dslbench code) so that a test comparing against
them can fail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _LN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones([dim]))
        self.dim = dim

    def forward(self, x):
        return F.layer_norm(x.float(), [self.dim]) * self.weight[None, None, :]


class _Timestep(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class _Rotary(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, seq_len):
        t = torch.arange(seq_len).type_as(self.inv_freq)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq.clone())
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def _rot_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class _Block(nn.Module):
    def __init__(self, dim, n_heads, cond_dim):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = _LN(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = _LN(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def forward(self, x, cos, sin, c):
        b, s, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        skip = x
        x = self.norm1(x) * (1 + sc1) + sh1
        qkv = self.attn_qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads)
        cos_, sin_ = cos[None, :, None, :], sin[None, :, None, :]
        q = qkv[:, :, 0] * cos_ + _rot_half(qkv[:, :, 0]) * sin_
        k = qkv[:, :, 1] * cos_ + _rot_half(qkv[:, :, 1]) * sin_
        v = qkv[:, :, 2]
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # b h s d
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        o = (weights @ v).transpose(1, 2).reshape(b, s, d)
        x = skip + g1 * self.attn_out(o)
        return x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + sh2)


class _Embed(nn.Module):
    def __init__(self, dim, vocab):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty((vocab, dim)))

    def forward(self, x):
        return self.embedding[x]


class _Final(nn.Module):
    def __init__(self, dim, vocab, cond_dim):
        super().__init__()
        self.norm_final = _LN(dim)
        self.linear = nn.Linear(dim, vocab)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class _Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.vocab_embed = _Embed(cfg["hidden_dim"], cfg["vocab_size"])
        self.sigma_map = _Timestep(cfg["cond_dim"])
        self.rotary_emb = _Rotary(cfg["hidden_dim"] // cfg["n_heads"])
        self.blocks = nn.ModuleList(_Block(cfg["hidden_dim"], cfg["n_heads"], cfg["cond_dim"]) for _ in range(cfg["n_blocks"]))
        self.output_layer = _Final(cfg["hidden_dim"], cfg["vocab_size"], cfg["cond_dim"])

    def forward(self, indices, sigma):
        if not self.cfg["time_conditioning"]:
            sigma = torch.zeros_like(sigma)
        x = self.vocab_embed(indices)
        c = F.silu(self.sigma_map(sigma))
        cos, sin = self.rotary_emb(x.shape[1])
        for block in self.blocks:
            x = block(x, cos, sin, c)
        return self.output_layer(x, c)


class ReleasedDiT(nn.Module):
    """The hub's ``MDLM`` (``backbone`` = the DiT); ``forward(input_ids)`` -> raw logits."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.backbone = _Backbone(cfg)

    def forward(self, input_ids, timesteps=None):
        if timesteps is None:
            timesteps = torch.zeros(input_ids.shape[0])
        return self.backbone(input_ids, timesteps)


def load_released(directory) -> ReleasedDiT:
    """The hub loading path: config.json fields + model.safetensors, strict key match."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    cfg = json.loads((Path(directory) / "config.json").read_text())
    model = ReleasedDiT(cfg)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------
# The released sampling loop


class ReleasedSampler:
    """``diffusion.Diffusion`` reduced to what ``_sample`` (ddpm_cache) runs; counts backbone calls."""

    def __init__(self, backbone, mask_index, sampler="mdlm", nucleus_p=1.0, eta=0.0, t_on=0.0, t_off=0.0,
                 alpha_on=0.0, noise_removal=True, generator=None, soft_mask=None):
        self.backbone = backbone
        # IBM's MDLM_SM (ishnbl/soft-masked-diffusion-language-models language/algo.py, transparency
        # head mixinputs_with_topk): dict(embedding=E [V, D], embeds_backbone=fn(embeds) -> logits,
        # scale, centre, steepness, k, t_min, t_max)
        self.soft_mask = soft_mask
        self.mask_index = mask_index
        self.sampler = sampler
        self.nucleus_p = nucleus_p
        self.eta, self.t_on, self.t_off, self.alpha_on = eta, t_on, t_off, alpha_on
        self.noise_removal = noise_removal
        self.generator = generator
        self.neg_infinity = -1000000.0
        self.calls = 0

    def _blend(self, x, log_p_prev):
        sm = self.soft_mask
        E = sm["embedding"]
        masked = x == self.mask_index
        rows = log_p_prev[masked]
        p = torch.softmax(rows, dim=-1)
        neg_entropy = torch.sum(p * torch.log(p + 1e-10), dim=-1)
        lam = sm["scale"] * torch.sigmoid(sm["steepness"] * (neg_entropy - sm["centre"]))
        top_logits, top_ids = torch.topk(rows, k=sm["k"], dim=-1)
        top_p = torch.softmax(top_logits.float(), dim=-1)
        idx = torch.cat([x[masked][:, None], top_ids], dim=-1)
        w = torch.cat([(1 - lam)[:, None], lam[:, None] * top_p], dim=-1)
        embeds = E[x].clone()
        embeds[masked] = (E[idx] * w[..., None]).sum(-2)
        return embeds

    def forward(self, x, log_p_prev=None):
        self.calls += 1
        if log_p_prev is not None:
            logits = self.soft_mask["embeds_backbone"](self._blend(x, log_p_prev)).float()
        else:
            logits = self.backbone(x).float()
        logits[:, :, self.mask_index] += self.neg_infinity
        logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        unmasked = x != self.mask_index
        logits[unmasked] = self.neg_infinity
        logits[unmasked, x[unmasked]] = 0
        return logits

    def sample_categorical(self, probs):
        probs = probs.to(torch.float64)
        u = torch.rand(probs.shape, generator=self.generator, dtype=torch.float64, device=probs.device)
        return (probs / (1e-10 - (u + 1e-10).log())).argmax(dim=-1)

    def update(self, x, t, dt, p_x0, conf):
        t = t.squeeze(-1)
        mc_t = t[:, None, None]
        mc_s = (t - dt)[:, None, None]
        if p_x0 is None:
            feedback = None
            if self.soft_mask is not None and self.soft_mask["t_min"] <= t[0].item() <= self.soft_mask["t_max"]:
                feedback = self.log_p_sm
            log_p = self.forward(x, feedback)
            self.log_p_sm = log_p
            p_x0 = log_p.exp()
            if self.nucleus_p < 1:
                sp, si = torch.sort(p_x0, descending=True, dim=-1)
                top = torch.cumsum(sp, dim=-1) <= self.nucleus_p
                top[..., 0] = True
                nuc = sp * top
                nuc /= nuc.sum(dim=-1, keepdim=True)
                p_x0 = torch.zeros_like(p_x0).scatter_(-1, si, nuc)
        mask = self.mask_index
        copy = (x != mask)
        if self.sampler == "mdlm":
            q = p_x0 * (mc_t - mc_s)
            q[:, :, mask] = mc_s[:, :, 0]
            new = self.sample_categorical(q)
            xs = copy.long() * x + (1 - copy.long()) * new
        elif self.sampler in ("remdm-cap", "remdm-rescale", "remdm-conf"):
            a_t = (1 - mc_t)[0].item()
            a_s = (1 - mc_s)[0].item()
            if self.sampler == "remdm-cap":
                sigma = min(self.eta, (1 - a_s) / a_t) if a_t > 0 else self.eta
            elif self.sampler == "remdm-rescale":
                sigma = self.eta * (min(1, (1 - a_s) / a_t) if a_t > 0 else 1)
            else:
                smax = min(1, (1 - a_s) / a_t) if a_t > 0 else 1
                w = conf.softmax(dim=-1)
                w[x == mask] = 0
                sigma = w * smax
            if isinstance(sigma, torch.Tensor):
                q = p_x0 * (1 - sigma[:, :, None])
                q[..., mask] = sigma
                q2 = p_x0 * ((a_s - (1 - sigma[:, :, None]) * a_t) / (1 - a_t))
                q2[..., mask] = (1 - a_s - sigma * a_t) / (1 - a_t)
            else:
                q = p_x0 * (1 - sigma)
                q[..., mask] = sigma
                q2 = p_x0 * ((a_s - (1 - sigma) * a_t) / (1 - a_t))
                q2[..., mask] = (1 - a_s - sigma * a_t) / (1 - a_t)
            xs = self.sample_categorical(torch.where(copy.unsqueeze(-1), q, q2))
            if self.sampler == "remdm-conf":
                newly = (x == mask) & (xs != mask)
                vals = -p_x0[torch.arange(xs.shape[0], device=xs.device)[:, None], torch.arange(xs.shape[1], device=xs.device), xs]
                # the release assigns float p into the bfloat16 score directly: on CUDA its p_x0 is
                # bfloat16 (the DiT runs under bf16 autocast); in float32 the cast must be explicit
                conf[newly] = vals[newly].to(conf.dtype)
                conf[(x != mask) & (xs == mask)] = -torch.inf
        else:  # remdm-loop
            time = t[0].item()
            if time > self.t_on:
                mc_t = (1 - (1 - t) * self.alpha_on / (1 - self.t_on))[:, None, None]
                mc_s = (1 - (1 - t + dt) * self.alpha_on / (1 - self.t_on))[:, None, None]
            elif time <= self.t_off:
                mc_t = (t * (1 - self.alpha_on) / self.t_off)[:, None, None]
                mc_s = ((t - dt) * (1 - self.alpha_on) / self.t_off)[:, None, None]
            if time > self.t_on or time <= self.t_off:
                q = p_x0 * (mc_t - mc_s)
                q[:, :, mask] = mc_s[:, :, 0]
                new = self.sample_categorical(q)
                xs = copy.long() * x + (1 - copy.long()) * new
            else:
                sigma, a = self.eta, self.alpha_on
                q = p_x0 * (1 - sigma)
                q[..., mask] = sigma
                q2 = p_x0 * ((a - (1 - sigma) * a) / (1 - a))
                q2[..., mask] = (1 - a - a * sigma) / (1 - a)
                xs = self.sample_categorical(torch.where(copy.unsqueeze(-1), q, q2))
        cache = p_x0 if torch.allclose(xs, x) else None
        return cache, xs, conf

    @torch.no_grad()
    def sample(self, batch, length, steps, eps=1e-5, device="cpu"):
        x = self.mask_index * torch.ones(batch, length, dtype=torch.int64, device=device)
        timesteps = torch.linspace(1, eps, steps + 1, device=device)
        dt = (1 - eps) / steps
        cache = None
        self.log_p_sm = None
        conf = -torch.ones_like(x).to(torch.bfloat16) * torch.inf
        for i in range(steps):
            t = timesteps[i] * torch.ones(x.shape[0], 1, device=device)
            cache, x, conf = self.update(x, t, dt, cache, conf)
        if self.noise_removal:
            x = self.forward(x).argmax(dim=-1)
        return x
