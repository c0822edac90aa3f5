"""``--objective uniform``: uniform-state corruption and a short DiffusionGemma training run."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dslbench.training.uniform_objective import UniformObjective, uniform_corrupt


def test_uniform_corrupt_touches_only_supervised_positions_at_the_row_rate():
    ids = torch.full((4, 2000), 5, dtype=torch.long)
    supervised = torch.zeros_like(ids, dtype=torch.bool)
    supervised[:, 1000:] = True
    noisy, corrupted, t = uniform_corrupt(ids, supervised, 50, torch.Generator().manual_seed(0))
    assert not corrupted[:, :1000].any() and torch.equal(noisy[:, :1000], ids[:, :1000])
    assert ((noisy != ids) <= corrupted).all() and (noisy < 50).all()
    rates = corrupted[:, 1000:].float().mean(dim=1)
    assert torch.allclose(rates, t, atol=0.06)  # one corruption level per example
    again = uniform_corrupt(ids, supervised, 50, torch.Generator().manual_seed(0))[0]
    assert torch.equal(noisy, again)


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match="--self-conditioning-p 2.0 must lie in"):
        UniformObjective(self_conditioning_p=2.0)
    with pytest.raises(ValueError, match="--freeze-router 'maybe'"):
        UniformObjective(freeze_router="maybe")


@pytest.fixture(scope="module")
def dg_ckpt(tiny_ckpt, tmp_path_factory):
    from transformers import AutoTokenizer

    from dslbench.models.diffusiongemma import make_tiny_diffusiongemma

    return make_tiny_diffusiongemma(tmp_path_factory.mktemp("dg") / "tiny-dg",
                                    AutoTokenizer.from_pretrained(str(tiny_ckpt)), seed=0)


def _cfg(base, out, steps, resume=False):
    from dslbench.training.loop import AdaptConfig

    return AdaptConfig(base=str(base), out=str(out), objective="uniform", data="synth:32", max_steps=steps,
                       resume=resume, lr=1e-3, warmup_steps=1, batch_size=4, seq_len=128, response_len=40,
                       save_every=2, device="cpu", progress=False, objective_options={"freeze_router": "no"})


def test_training_runs_resumes_exactly_and_loads(dg_ckpt, tmp_path):
    from dslbench.harness.diffusiongemma_backend import DiffusionGemma
    from dslbench.training.loop import run_adapt

    whole = run_adapt(_cfg(dg_ckpt, tmp_path / "whole", 4))
    assert all(torch.isfinite(torch.tensor(whole.losses)))

    class Crash(Exception):
        pass

    def crash(step, _):
        if step == 2:
            raise Crash

    with pytest.raises(Crash):
        run_adapt(_cfg(dg_ckpt, tmp_path / "split", 4), on_step_end=crash)
    resumed = run_adapt(_cfg(dg_ckpt, tmp_path / "split", 4, resume=True))
    assert resumed.losses == whole.losses[2:]
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = load_file(str(dg_ckpt / "model.safetensors"))
    assert not torch.equal(before["model.decoder.embed_tokens.weight"], a["model.decoder.embed_tokens.weight"])

    backend = DiffusionGemma.create_from_arg_string(f"pretrained={tmp_path / 'whole'},gen_length=16,nfe=2")
    assert backend.info.canvas_length == 32
