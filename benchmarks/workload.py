"""What the benchmark measures on: its sizes, the random LLaDA-format checkpoints (base, DSL twin,
soft-mask twin), the backends loaded from them and random prompts. Timing does not depend on the
weights, so the models are randomly initialised."""

from __future__ import annotations

from pathlib import Path

import torch

BACKENDS = ("mdm_llada", "softmask_llada", "dsl_llada")

SIZES = {
    # d_model, layers, heads, mlp hidden, prompt tokens, generated tokens, NFE, noise dim
    "quick": dict(d_model=128, n_layers=2, n_heads=4, mlp=352, prompt_len=32, gen_length=64, nfe=8,
                  noise_dim=100, batches=(1, 2, 4, 8, 16), overhead_batch=8, reps=3,
                  conv_tokens=4, e2e_limit=8, open_ended_limit=16, train_batch=8, train_len=128, train_reps=5, summ_prompt_len=192, summ_reps=2),
    "full": dict(d_model=256, n_layers=4, n_heads=4, mlp=688, prompt_len=32, gen_length=128, nfe=16,
                 noise_dim=100, batches=(1, 2, 4, 8, 16), overhead_batch=8, reps=5,
                 conv_tokens=16, e2e_limit=32, open_ended_limit=32, train_batch=8, train_len=256, train_reps=11, summ_prompt_len=512,
                 summ_reps=3),
}
# CI smoke sub-mode (tests/test_benchmarks.py): every code path, seconds; figures meaningless.
SIZES["smoke"] = dict(d_model=64, n_layers=2, n_heads=4, mlp=176, prompt_len=8, gen_length=16, nfe=4, noise_dim=16,
                      batches=(1, 2), overhead_batch=2, reps=1, conv_tokens=2, e2e_limit=2, open_ended_limit=3, train_batch=2,
                      train_len=32, train_reps=1, summ_prompt_len=24, summ_reps=1,
                      big=dict(vocab=4096, noise_dim=100, d_model=256, n_layers=32, n_heads=4, mlp=688))
GPU_SIZES = dict(d_model=1024, n_layers=8, n_heads=16, mlp=2816, conv_tokens=256, train_len=512)

# Published LLaDA-8B shapes (DESIGN.md).
BIG = dict(vocab=126464, noise_dim=100, d_model=4096, n_layers=32, n_heads=32, mlp=12288)


def build_checkpoints(size: dict, workdir: Path, device: torch.device) -> dict[str, Path]:
    """A random LLaDA-format checkpoint of the given size, its DSL twin and its soft-mask twin."""
    from dslbench.diffusion.dsl import DSLModules
    from dslbench.diffusion.softmask import SoftMaskParams, save_softmask
    from dslbench.models.dsl_checkpoint import save_dsl_checkpoint
    from dslbench.models.tiny import _default_corpus, build_tiny_llada, save_checkpoint
    from dslbench.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(_default_corpus(0), vocab_size=1024)
    model = build_tiny_llada(
        tokenizer, seed=0, d_model=size["d_model"], n_layers=size["n_layers"], n_heads=size["n_heads"],
        mlp_hidden_size=size["mlp"], max_sequence_length=2048,
    )
    base = save_checkpoint(model, tokenizer, workdir / "base")
    soft = save_checkpoint(model, tokenizer, workdir / "softmask")
    save_softmask(SoftMaskParams(scale=0.5, centre=-0.75, steepness=6.66), soft, k=3)
    vocab = model.config.vocab_size
    dsl = DSLModules(vocab, size["noise_dim"], size["d_model"], beta_init=2.0, noise_seed=0)
    dsl.init_from_backbone(model.get_input_embeddings().weight, model.config.mask_token_id)
    dslp = save_dsl_checkpoint(model, dsl, tokenizer, workdir / "dsl", {"beta_train": 2.0})
    return {"mdm_llada": base, "softmask_llada": soft, "dsl_llada": dslp}


def load_backend(name: str, ckpt: Path, size: dict, device: torch.device, batch: int = 8, extra: dict | None = None):
    from dslbench.harness.dsl_backend import DSLLLaDA
    from dslbench.harness.mdm_backend import MDMLLaDA
    from dslbench.harness.softmask_backend import SoftMaskLLaDA

    cls = {"mdm_llada": MDMLLaDA, "softmask_llada": SoftMaskLLaDA, "dsl_llada": DSLLLaDA}[name]
    return cls.create_from_arg_obj(
        {"pretrained": str(ckpt), "gen_length": size["gen_length"], "nfe": size["nfe"], "device": str(device), **(extra or {})},
        {"batch_size": batch},
    )


def prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(16, vocab, (batch, length), generator=g).tolist()
