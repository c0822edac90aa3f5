"""lm-eval's log-likelihood requests: a Monte-Carlo estimate of the masked-diffusion bound
(:mod:`dslbench.diffusion.elbo`); rolling log-likelihoods are refused with the reason."""

from __future__ import annotations

import torch
from tqdm import tqdm


class LikelihoodMixin:
    """Needs ``self.denoiser``, ``self.args``, ``self.defaults`` and the prompt encoding."""

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from dslbench.diffusion.elbo import is_greedy, mc_loglikelihood

        out = []
        generator = torch.Generator(device="cpu").manual_seed(self.args["seed"])
        for req in tqdm(requests, desc=f"{self.NAME} loglikelihood", disable=disable_tqdm or self.rank != 0):
            context, continuation = req.args
            # Tokenise the whole string once and split, so merges across the boundary match.
            whole = self._encode_context(context + continuation)
            prefix = self._encode_context(context) if context else whole[:1]
            target = whole[len(prefix):]
            if not target:
                raise ValueError(f"{self.NAME}: empty continuation for context {context[-40:]!r}")
            prefix_t = torch.tensor(prefix, device=self.device)
            target_t = torch.tensor(target, device=self.device)
            ll = mc_loglikelihood(
                self.denoiser, prefix_t, target_t,
                mc_num=self.args["mc_num"], batch_size=self.args["mc_batch_size"],
                cfg_scale=float(self.defaults.get("cfg", 0.0) or 0.0), generator=generator,
            )
            greedy = is_greedy(self.denoiser, prefix_t, target_t)
            out.append((float(ll), bool(greedy)))
            self.cache_hook.add_partial("loglikelihood", req.args, out[-1])
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            f"{self.NAME}: loglikelihood_rolling (perplexity tasks) is not supported: a masked diffusion "
            "model gives only a Monte-Carlo bound on a sequence's likelihood, not token-by-token rolling "
            "log-probabilities; use generation or multiple-choice tasks"
        )
