"""Discrete Stochastic Localization (DSL): the channel, the noise embedding, the converter and
the training SNR schedule. Model-agnostic: nothing here imports a model class.

Notation (DESIGN.md, section DSL): V tokens, noise dimension d, backbone width D.

- Noise embedding ``E_n`` (V x d): random directions, every row of norm 1, frozen.
- Channel, per token i with its own SNR ``g_i >= 0``: ``z_i = g_i * E_n[x_i] + sqrt(g_i) * eps_i``
  with ``eps_i ~ N(0, I_d)``. ``g = 0`` gives ``z = 0`` (the [MASK] state). Because every row has
  norm 1, ``log p(x | z) = log prior(x) + z . E_n[x] + const``: the posterior depends on z only
  through ``z K^T``, whatever g is, so one denoiser serves every SNR with no time input.
- Converter: keys ``K = [E_n; 0]`` (V token rows and one all-zero "mask" row),
  ``p = softmax(beta * z K^T + b)`` over the V+1 slots, backbone input ``h = p W + c`` where
  ``W`` ((V+1) x D) starts as the base token embeddings with row V = the [MASK] embedding, ``b``
  starts at 0 except ``b[V] = log V``, ``c`` (the linear bias) at 0 (:meth:`DSLModules.init_from_backbone`;
  the released training keeps ``nn.Linear``'s default draw instead: :meth:`DSLModules.reset_linear_bias`)
  and ``beta`` is learnable.
  It runs in float32 (a softmax over ~126k slots is fragile in bf16); the output is cast to the
  backbone dtype.
- Training SNRs: per sequence, with probability 0.1 a smoothed random-order draw (k ~ U{0..L-1}
  revealed positions at ``U[0.8, 1] * 100``, the others at ``U[0, 1)``), otherwise log-normal
  ``log g ~ N(1.69, 0.9^2)`` clamped at 40.

Published layout of the parameters (the DSL-LLaDA release stores them next to the backbone keys
in the same safetensors file): ``noise_embed.weight`` (V x d), ``converter.logit_bias`` (V+1),
``converter.backbone_embedding.weight`` (D x (V+1), an ``nn.Linear(V+1, D)``),
``converter.backbone_embedding.bias`` (D) and ``converter.beta`` (a 0-dim tensor).
:class:`DSLModules` has exactly these state-dict keys.

Departure noted: the released training code draws the log-normal SNR once per *sequence* and
broadcasts it over the positions; DESIGN.md specifies a *per-token* draw, which is the default
here (``lognormal_per="sequence"`` reproduces the released code). The marginal law of each
token's SNR is the same either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dslbench.diffusion import rng

# Published hyper-parameters of the training schedule.
ROAR_PROB = 0.1
SNR_MAX = 100.0  # revealed ROAR tokens: U[0.8, 1.0] * SNR_MAX
ROAR_REVEALED_LOW = 0.8
LOGNORMAL_MU = 1.69
LOGNORMAL_SIGMA = 0.9
LOGNORMAL_MAX = 40.0


def make_noise_embedding(vocab_size: int, dim: int = 100, seed: int = 0) -> torch.Tensor:
    """``[V, d]`` float32 random directions with unit-norm rows, reproducible from ``seed``."""
    if vocab_size < 1 or dim < 1:
        raise ValueError(f"vocab_size and dim must be >= 1, got vocab_size={vocab_size}, dim={dim}")
    g = torch.Generator().manual_seed(int(seed))
    return F.normalize(torch.randn(vocab_size, dim, generator=g, dtype=torch.float32), dim=-1)


def channel(
    ids: torch.Tensor,
    snr: torch.Tensor | float,
    noise_embedding: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``z = g * E_n[x] + sqrt(g) * eps`` in float32, ``[B, L, d]``.

    ``snr`` is ``[B, L]`` (one SNR per token), ``[B]``, or a scalar; negative values are an error.
    """
    ids = ids.long()
    emb = noise_embedding.to(device=ids.device, dtype=torch.float32)
    x = emb[ids]
    g = torch.as_tensor(snr, dtype=torch.float32, device=ids.device)
    if g.dim() == 1 and ids.dim() == 2:
        g = g[:, None]
    g = g.expand(ids.shape)
    if bool((g < 0).any()):
        raise ValueError("SNR values must be >= 0")
    eps = rng.randn(x.shape, generator, device=ids.device)
    return g[..., None] * x + g.sqrt()[..., None] * eps


def sample_training_snr(
    batch: int,
    length: int,
    generator: torch.Generator | None = None,
    roar_prob: float = ROAR_PROB,
    *,
    mu: float = LOGNORMAL_MU,
    sigma: float = LOGNORMAL_SIGMA,
    lognormal_max: float = LOGNORMAL_MAX,
    snr_max: float = SNR_MAX,
    lognormal_per: str = "token",
    device: torch.device | str | None = None,
    return_roar: bool = False,
):
    """Training SNRs ``[B, L]`` (float32) with the published mixed schedule.

    Each row is, with probability ``roar_prob``, a smoothed random-order (ROAR) draw: ``k`` is
    uniform on ``{0, ..., L-1}``, a uniformly random set of k positions is revealed with
    ``g ~ U[0.8, 1.0] * snr_max`` and the rest get ``g ~ U[0, 1)``. Otherwise
    ``log g ~ N(mu, sigma^2)``, clamped at ``lognormal_max``, drawn per token
    (``lognormal_per="token"``, DESIGN.md) or once per row (``"sequence"``, the released code).

    With ``return_roar=True`` returns ``(snr, is_roar [B] bool)``.
    """
    if batch < 1 or length < 1:
        raise ValueError(f"batch and length must be >= 1, got batch={batch}, length={length}")
    if not 0.0 <= roar_prob <= 1.0:
        raise ValueError(f"roar_prob={roar_prob} must lie in [0, 1]")
    if lognormal_per not in ("token", "sequence"):
        raise ValueError(f"lognormal_per={lognormal_per!r}; allowed: 'token', 'sequence'")
    is_roar = rng.rand((batch,), generator) < roar_prob

    # Log-normal part (drawn for every row, then replaced on ROAR rows: fixed draw order).
    if lognormal_per == "token":
        log_g = rng.randn((batch, length), generator) * sigma + mu
    else:
        log_g = (rng.randn((batch, 1), generator) * sigma + mu).expand(batch, length)
    snr = log_g.exp().clamp(max=lognormal_max)

    # ROAR part: k ~ U{0..L-1} revealed positions in a uniformly random order.
    gen_device = generator.device if generator is not None else None
    k = torch.randint(0, length, (batch,), generator=generator, device=gen_device).cpu()
    order = rng.rand((batch, length), generator).argsort(dim=1).argsort(dim=1)  # rank of each position
    revealed = order < k[:, None]
    high = snr_max * (ROAR_REVEALED_LOW + (1.0 - ROAR_REVEALED_LOW) * rng.rand((batch, length), generator))
    low = rng.rand((batch, length), generator)
    roar = torch.where(revealed, high, low)

    snr = torch.where(is_roar[:, None], roar, snr).contiguous()
    if device is not None:
        snr, is_roar = snr.to(device), is_roar.to(device)
    return (snr, is_roar) if return_roar else snr


class DSLConverter(nn.Module):
    """``h = softmax(beta * beta_scale * z K^T + b) W (+ c)`` with ``K = [E_n; 0]``, in float32.

    Holds no reference to the noise embedding (the keys are passed in), so the state dict has
    exactly the published converter keys: ``logit_bias``, ``backbone_embedding.{weight,bias}``,
    ``beta``.
    """

    def __init__(self, vocab_size: int, d_model: int, beta_init: float = 2.0) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.backbone_embedding = nn.Linear(vocab_size + 1, d_model, bias=True)
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        bias = torch.zeros(vocab_size + 1)
        bias[-1] = math.log(vocab_size)
        self.logit_bias = nn.Parameter(bias)
        with torch.no_grad():
            self.backbone_embedding.bias.zero_()

    def slot_probs(self, z: torch.Tensor, noise_embedding: torch.Tensor, beta_scale: float = 1.0) -> torch.Tensor:
        """``[..., V+1]`` float32 probabilities over the V token slots and the mask slot."""
        zf = z.float()
        keys = noise_embedding.to(device=zf.device, dtype=torch.float32)
        scores = zf @ keys.T  # the zero mask key contributes a 0 score
        scores = torch.cat([scores, torch.zeros_like(scores[..., :1])], dim=-1)
        logits = self.beta.float() * float(beta_scale) * scores + self.logit_bias.float()
        return torch.softmax(logits, dim=-1)

    def forward(self, z: torch.Tensor, noise_embedding: torch.Tensor, beta_scale: float = 1.0) -> torch.Tensor:
        """``softmax(beta * beta_scale * z K^T + b) W + c``: the value of
        ``F.linear(self.slot_probs(z, ...), W, c)``, computed without building the V+1 slot
        logits. The mask slot's score is the constant 0 (its key is the zero row), so the softmax
        runs over the V token slots alone and the mask slot enters through its share of the mass:
        with ``s = softmax(tok)`` and ``lse = logsumexp(tok) = max(tok) - log(max(s))``, the token
        slots hold ``sigmoid(lse - b_V)`` of the mass and the mask slot the rest."""
        v = self.vocab_size
        zf = z.float()
        keys = noise_embedding.to(device=zf.device, dtype=torch.float32)
        bias = self.logit_bias.float()
        weight = self.backbone_embedding.weight.float()  # [D, V+1]
        flat = zf.reshape(-1, zf.shape[-1])
        scale = self.beta.float() * float(beta_scale)
        if torch.is_grad_enabled() and self.beta.requires_grad:
            # Training: beta's gradient is then an elementwise product with the scores, not a
            # d-wide matmul back through z.
            tok = (flat @ keys.T) * scale + bias[:v]
        else:
            tok = torch.addmm(bias[:v], flat * scale, keys.T)  # token-slot logits [N, V]
        probs = torch.softmax(tok, dim=-1)
        if tok.requires_grad:
            # The same values read at the argmax: a gather's backward is one scatter, where an
            # amax's is a compare, two casts, a sum and a product over the whole [N, V].
            top = tok.detach().argmax(dim=-1, keepdim=True)
            lse = tok.gather(-1, top) - torch.log(probs.gather(-1, top))
        else:
            lse = tok.amax(dim=-1, keepdim=True) - torch.log(probs.amax(dim=-1, keepdim=True))
        token_share = torch.sigmoid(lse - bias[v])  # [N, 1]
        h = token_share * (probs @ weight[:, :v].T) + (1 - token_share) * weight[:, v]
        h = h + self.backbone_embedding.bias.float()
        return h.reshape(*zf.shape[:-1], weight.shape[0])


class DSLModules(nn.Module):
    """The DSL parameters that sit next to a backbone: the frozen noise embedding and the converter.

    ``state_dict()`` keys: ``noise_embed.weight``, ``converter.logit_bias``,
    ``converter.backbone_embedding.weight``, ``converter.backbone_embedding.bias``,
    ``converter.beta`` (the published layout).
    """

    def __init__(
        self,
        vocab_size: int,
        noise_dim: int,
        d_model: int,
        beta_init: float = 2.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.noise_dim = int(noise_dim)
        self.d_model = int(d_model)
        self.noise_seed = int(noise_seed)
        self.noise_embed = nn.Embedding(vocab_size, noise_dim)
        with torch.no_grad():
            self.noise_embed.weight.copy_(make_noise_embedding(vocab_size, noise_dim, noise_seed))
        self.noise_embed.weight.requires_grad_(False)
        self.converter = DSLConverter(vocab_size, d_model, beta_init)

    @property
    def noise_embedding(self) -> torch.Tensor:
        """``E_n``, ``[V, d]``."""
        return self.noise_embed.weight

    @property
    def beta(self) -> float:
        return float(self.converter.beta.detach())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The converter's parameters (W, its bias, the logit bias, beta); never the noise embedding."""
        return list(self.converter.parameters())

    @torch.no_grad()
    def init_from_backbone(self, token_embeddings: torch.Tensor, mask_id: int) -> None:
        """W rows 0..V-1 = the base token embeddings, row V = the [MASK] embedding; biases reset
        to their initial values (linear bias 0, logit bias 0 except log V on the mask slot)."""
        emb = token_embeddings.detach()
        if emb.dim() != 2 or emb.shape[1] != self.d_model:
            raise ValueError(f"token_embeddings must be [V_emb, {self.d_model}], got {tuple(emb.shape)}")
        if emb.shape[0] < self.vocab_size:
            raise ValueError(
                f"token_embeddings has {emb.shape[0]} rows but the DSL vocabulary has {self.vocab_size}"
            )
        if not 0 <= mask_id < emb.shape[0]:
            raise ValueError(f"mask_id={mask_id} is outside the embedding table ({emb.shape[0]} rows)")
        weight = self.converter.backbone_embedding.weight  # [D, V+1]
        weight[:, : self.vocab_size].copy_(emb[: self.vocab_size].T.to(weight.dtype))
        weight[:, self.vocab_size].copy_(emb[mask_id].to(weight.dtype))
        self.converter.backbone_embedding.bias.zero_()
        self.converter.logit_bias.zero_()
        self.converter.logit_bias[-1] = math.log(self.vocab_size)

    @torch.no_grad()
    def reset_linear_bias(self, generator: torch.Generator | None = None) -> None:
        """Draw the converter Linear's bias as ``nn.Linear`` initialises it,
        ``U(-1/sqrt(V+1), 1/sqrt(V+1))`` (the released training keeps that initialisation; only
        the weight is copied from the base embeddings)."""
        bias = self.converter.backbone_embedding.bias
        bound = 1.0 / math.sqrt(self.vocab_size + 1)
        draw = torch.rand(bias.shape, generator=generator, dtype=torch.float32)
        bias.copy_((draw * 2.0 - 1.0) * bound)

    def channel(self, ids: torch.Tensor, snr, generator: torch.Generator | None = None) -> torch.Tensor:
        return channel(ids, snr, self.noise_embed.weight, generator)

    def slot_probs(self, z: torch.Tensor, beta_scale: float = 1.0) -> torch.Tensor:
        return self.converter.slot_probs(z, self.noise_embed.weight, beta_scale)

    def convert(self, z: torch.Tensor, beta_scale: float = 1.0, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Backbone inputs ``[B, L, D]`` for noisy embeddings ``z`` ``[B, L, d]`` (float32 math)."""
        if z.shape[-1] != self.noise_dim:
            raise ValueError(f"z has last dimension {z.shape[-1]}, the noise embedding has {self.noise_dim}")
        h = self.converter(z, self.noise_embed.weight, beta_scale)
        return h if out_dtype is None else h.to(out_dtype)

    def forward(self, z: torch.Tensor, beta_scale: float = 1.0, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.convert(z, beta_scale, out_dtype)
