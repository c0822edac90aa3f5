"""How often a document's sample changes with the batch it is decoded in: ``mdm_llada`` at
temperature > 0 on a tiny checkpoint, N prompts of mixed lengths decoded at batch size 1 and at
batch size B (left padding), with and without ``batch_invariant``. Per-document random streams
make the draws batch-independent; what remains is padding moving the float32 logits by ~1e-6,
which flips a near-tie now and then. The README's figure comes from:

    dslbench make-tiny --out /tmp/tiny-claims
    PYTHONPATH=. python benchmarks/batch_flips.py /tmp/tiny-claims

(defaults: 40 prompts, temperature 0.8, batch 8, nfe 16, gen_length 32)."""

from __future__ import annotations

import argparse
import random

from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.metrics.sample_stats import split_stats

WORDS = ("the committee met on tuesday and agreed a new budget for school river mountain weather "
         "report said that prices rose sharply while officials warned about storms near coast city").split()


class _Request:
    def __init__(self, context: str, gen_kwargs: dict) -> None:
        self.args = (context, gen_kwargs)
        self.repeats = 1


def prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` word-salad prompts of 3 to 40 words (mixed lengths: rows get padded)."""
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 40))) + "." for _ in range(n)]


def texts(ckpt: str, batch_size: int, items: list[str], gen_kwargs: dict, extra: str = "") -> list[str]:
    backend = MDMLLaDA.create_from_arg_string(f"pretrained={ckpt},seed=5{extra}", {"batch_size": batch_size})
    return [split_stats(r)[0] for r in backend.generate_until([_Request(p, gen_kwargs) for p in items],
                                                             disable_tqdm=True)]


def flips(ckpt: str, n: int = 40, temperature: float = 0.8, batch: int = 8, nfe: int = 16,
          gen_length: int = 32) -> dict[str, int]:
    """Documents whose sample at ``batch`` differs from batch 1, padded and ``batch_invariant``."""
    items = prompts(n)
    gk = {"nfe": nfe, "gen_length": gen_length, "temperature": temperature, "return_stats": True}
    alone = texts(ckpt, 1, items, gk)
    padded = texts(ckpt, batch, items, gk)
    invariant = texts(ckpt, batch, items, gk, ",batch_invariant=true")
    return {"documents": n, "padded": sum(a != b for a, b in zip(alone, padded)),
            "batch_invariant": sum(a != b for a, b in zip(alone, invariant))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--gen-length", type=int, default=32)
    args = parser.parse_args()
    out = flips(args.checkpoint, args.n, args.temperature, args.batch, args.nfe, args.gen_length)
    print(f"{out['padded']} of {out['documents']} documents differ between batch 1 and batch {args.batch} "
          f"(temperature {args.temperature}, nfe {args.nfe}, gen_length {args.gen_length}); with batch_invariant=true: {out['batch_invariant']}")


if __name__ == "__main__":
    main()
