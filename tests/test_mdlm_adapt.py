"""``dslbench adapt`` on an MDLM-format base: mdm and softmask run end to end, the mask is never
a prediction, the checkpoint is written in the released layout (the losses themselves:
tests/test_adapt_mdlm.py; the dsl objective on MDLM: tests/test_adapt_mdlm_dsl.py)."""

from __future__ import annotations

import pytest
import torch

from dslbench.models.loading import load_model
from dslbench.training.loop import AdaptConfig, run_adapt
from tests.mdlm_reference import load_released


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(base, out, objective):
    return AdaptConfig(base=str(base), out=str(out), objective=objective, max_steps=4, batch_size=2, seq_len=64,
                       response_len=16, warmup_steps=0, lr=3e-3, save_every=0, progress=False, seed=0)


@pytest.mark.parametrize("objective", ["mdm", "softmask"])
def test_adapt_writes_an_mdlm_checkpoint_in_the_released_layout(tiny_mdlm, tmp_path, objective):
    res = run_adapt(_cfg(tiny_mdlm, tmp_path / objective, objective))
    assert res.losses and all(torch.isfinite(torch.tensor(res.losses)))
    before, _, _ = load_model(str(tiny_mdlm), dtype="float32", device="cpu")
    after, _, info = load_model(str(res.out), dtype="float32", device="cpu")
    assert info.family == "mdlm"
    moved = [k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert moved  # the weights were trained
    released = load_released(res.out)  # the written keys load into the released module tree
    ids = torch.arange(16)[None]
    with torch.no_grad():
        torch.testing.assert_close(after(input_ids=ids).logits, released(ids), rtol=1e-5, atol=1e-5)
    if objective == "softmask":
        assert (res.out / "softmask.safetensors").is_file()


def test_training_never_predicts_the_mask(tiny_mdlm):
    from dslbench.training.objective import AdaptModule
    from dslbench.training.objectives import make_objective

    model, tokenizer, info = load_model(str(tiny_mdlm), dtype="float32", device="cpu")
    module = AdaptModule(model, {}, make_objective("mdm"), info)
    logits = module.logits(input_ids=torch.full((1, 8), info.mask_id))
    assert torch.isinf(logits[..., info.mask_id]).all() and torch.isfinite(logits[..., : info.mask_id]).all()

