"""A tiny GPT-2 evaluator (GenPPL / MAUVE features) built offline, for tests and the demo.

GPT-2-large is the published evaluator; this stand-in has the same architecture and tokenizer
kind (byte-level BPE, ``<|endoftext|>`` as bos/eos/unk, no pad), n_positions 1024 so the
released 1024-token truncation is representable, and is briefly trained on the synthetic corpus
so that its NLLs mean something (synthetic text scores clearly lower than shuffled words).
Everything is a pure function of the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

from dslbench.models.staging import staged_checkpoint_dir

EOS = "<|endoftext|>"
VOCAB_SIZE = 512
N_POSITIONS = 1024
BLOCK = 64  # training sequence length: the synthetic documents are ~60-120 tokens


def train_gpt2_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """GPT-2-style byte-level BPE (prefix-space-free pre-tokenizer, one special token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=N_POSITIONS,
    )


def _blocks(tokenizer, texts: list[str]):
    """The corpus as one eos-separated token stream cut into BLOCK-token rows."""
    import torch

    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    n = len(stream) // BLOCK
    return torch.tensor(stream[: n * BLOCK]).view(n, BLOCK)


def build_tiny_gpt2(seed: int = 0, steps: int = 150, batch_size: int = 16, texts: list[str] | None = None):
    """``(model, tokenizer)``: a GPT2LMHeadModel (64 wide, 2 layers, 2 heads) trained ``steps`` steps."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dslbench.data.synth import tokenizer_corpus

    corpus = list(texts) if texts is not None else tokenizer_corpus(seed)
    tokenizer = train_gpt2_tokenizer(corpus)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_embd=64, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: nothing random after init
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reductions in a fixed order, so byte-identical weights
    try:
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        data = _blocks(tokenizer, corpus)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        model.train()
        for _ in range(steps):
            batch = data[torch.randint(len(data), (batch_size,), generator=gen)]
            loss = model(batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), tokenizer


def make_tiny_gpt2(out: str | os.PathLike, seed: int = 0, **kwargs) -> Path:
    """Build :func:`build_tiny_gpt2` and save it at ``out`` as a plain HF folder (written atomically).

    Name the folder with ``gpt2`` in it if mauve-text's own text path must load it (its
    ``get_model`` accepts only such names)."""
    model, tokenizer = build_tiny_gpt2(seed=seed, **kwargs)
    with staged_checkpoint_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return Path(out).expanduser().resolve()
