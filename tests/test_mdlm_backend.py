"""mdm_llada / softmask_llada (and their family-neutral names mdm / softmask) on an MDLM-format checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dslbench.metrics.sample_stats import split_stats


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_mdlm(tiny_mdlm):
    return str(tiny_mdlm)  # the backends take pretrained= as a string


# as the dsl_uncond_* tasks ask: no prompt (the text only names the sample and seeds it), whole span kept
UNCOND = {"max_gen_toks": 24, "until": [], "return_stats": True, "prompt_format": "none", "response_cut": "keep"}


def _requests(n, kwargs=UNCOND, text=None):
    return [SimpleNamespace(args=(f"sample-{i}" if text is None else text, dict(kwargs)), repeats=1) for i in range(n)]


def test_unconditional_samples_from_an_empty_prompt(tiny_mdlm):
    from dslbench.harness.mdm_backend import MDMLLaDA

    be = MDMLLaDA(pretrained=tiny_mdlm, device="cpu", batch_size=3, nfe=25, nucleus_p=0.9)
    outs = [split_stats(o) for o in be.generate_until(_requests(3))]
    texts = [t for t, _ in outs]
    stats = [s for _, s in outs]
    assert len(set(texts)) == 3  # one sample per document, not one per prompt
    for s in stats:
        assert s["sampler"] == "ddpm_cache" and s["prompt_tokens"] == 0 and s["gen_length"] == 24
        assert 1 <= s["nfe"] <= 25 and s["steps"] == 24  # T = nfe - 1 (noise removal); the cache lowers the calls
    # a document's sample does not depend on its batch
    alone = MDMLLaDA(pretrained=tiny_mdlm, device="cpu", batch_size=1, nfe=25, nucleus_p=0.9)
    assert split_stats(alone.generate_until(_requests(3)[1:2])[0])[0] == texts[1]


@pytest.mark.parametrize("remdm", ["cap", "rescale", "conf", "loop"])
def test_remdm_strategies_run_through_the_backend(tiny_mdlm, remdm):
    from dslbench.harness.mdm_backend import MDMLLaDA

    be = MDMLLaDA(pretrained=tiny_mdlm, device="cpu", batch_size=2, steps=32, remdm=remdm, remdm_eta=0.1,
                  mdlm_cache="row")
    (text, stats), _ = [split_stats(o) for o in be.generate_until(_requests(2))]
    assert text and stats["steps"] == 32 and stats["nfe"] <= 33


def test_llada_sampler_on_mdlm_never_emits_the_mask(tiny_mdlm):
    from dslbench.harness.mdm_backend import MDMLLaDA

    be = MDMLLaDA(pretrained=tiny_mdlm, device="cpu", sampler="llada", nfe=8, gen_length=16)
    out = be._sample(torch.zeros((1, 0), dtype=torch.long), torch.zeros((1, 0), dtype=torch.long),
                     be.request_options({}), [torch.Generator().manual_seed(0)])
    assert not (out.tokens == be.info.mask_id).any()


def test_softmask_on_mdlm(tiny_mdlm):
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    be = SoftMaskLLaDA(pretrained=tiny_mdlm, device="cpu", batch_size=2, nfe=17, scale=0.5)
    (text, stats), _ = [split_stats(o) for o in be.generate_until(_requests(2))]
    assert text and stats["sampler"] == "ddpm_cache" and stats["softmask_k"] == 3


@pytest.mark.parametrize("args, message", [
    ({"cfg": 1.0}, "cfg=1.0 has no meaning with sampler=ddpm_cache"),
    ({"remasking": "random"}, "remasking='random' has no meaning with sampler=ddpm_cache"),
    ({"sampler": "llada", "nucleus_p": 0.9}, "nucleus_p=0.9 has no meaning with sampler=llada"),
    ({"nfe": 1}, "nfe=1 leaves no step for sampler=ddpm_cache"),
])
def test_meaningless_combinations_are_refused(tiny_mdlm, args, message):
    from dslbench.harness.mdm_backend import MDMLLaDA

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        be = MDMLLaDA(pretrained=tiny_mdlm, device="cpu", gen_length=8, **args)
        be.generate_until(_requests(1))


def test_family_neutral_names_are_registered():
    from lm_eval.api.registry import get_model

    import dslbench.harness.mdm_backend  # noqa: F401
    import dslbench.harness.softmask_backend  # noqa: F401
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    assert get_model("mdm") is MDMLLaDA and get_model("mdm_llada") is MDMLLaDA
    assert get_model("softmask") is SoftMaskLLaDA and get_model("softmask_llada") is SoftMaskLLaDA


def test_unconditional_generation_may_fill_the_context(tiny_mdlm):
    """An empty prompt leaves the whole context to the canvas (model_length tokens, as released)."""
    from dslbench.harness.mdm_backend import MDMLLaDA

    be = MDMLLaDA(pretrained=tiny_mdlm, device="cpu", steps=2, max_length=32)
    (text, stats), = [split_stats(o) for o in be.generate_until(_requests(1, {**UNCOND, "max_gen_toks": 32}))]
    assert stats["gen_length"] == 32 and stats["prompt_tokens"] == 0
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        be.generate_until(_requests(1, {"max_gen_toks": 32, "until": []}, text="The council"))
