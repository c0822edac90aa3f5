"""Corrupted-token totals of the repair tasks, recounted from the code: each passage of the
wikitext source (``load_passages``: ``$DSLBENCH_DATA_DIR``'s ``wikitext_100.jsonl``) tokenized
as the backend does (its own tokens, no special tokens, cut to ``max_length``) and counted with
:func:`corruption_count` (``max(1, int(n x r))``), beside the former ``round(r x n)`` and the
number of passages where the two differ. The totals in tasks/repair/README.md come from here:

    DSLBENCH_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/repair_counts.py /tmp/tiny-claims

(``/tmp/tiny-claims`` from ``dslbench make-tiny --out /tmp/tiny-claims``: the tiny checkpoint's
tokenizer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dslbench.data.repair import load_passages
from dslbench.diffusion.corruption import corruption_count
from dslbench.models.loading import llada_config_from_dir, load_tokenizer

RATES = (0.10, 0.30, 0.50)


def counts(checkpoint: str, n_docs: int = 100, max_length: int | None = None) -> dict[float, tuple[int, int, int]]:
    """rate -> (total now, total with round(r x n), passages that differ)."""
    config = llada_config_from_dir(Path(checkpoint))
    tokenizer = load_tokenizer(Path(checkpoint), config)  # as the backend loads it
    if max_length is None:  # the backend's default max_length
        max_length = int(config.max_sequence_length)
    lengths = []
    for doc in load_passages("wikitext", n_docs=n_docs):
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        lengths.append(min(len(ids), max_length))
    out = {}
    for rate in RATES:
        now = [corruption_count(n, rate) for n in lengths]
        former = [round(rate * n) for n in lengths]
        out[rate] = (sum(now), sum(former), sum(a != b for a, b in zip(now, former)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint folder whose tokenizer counts the tokens")
    parser.add_argument("--n-docs", type=int, default=100)
    args = parser.parse_args()
    for rate, (now, former, differ) in counts(args.checkpoint, args.n_docs).items():
        print(f"{round(100 * rate)} %: {now} corrupted tokens (max(1, int(n x r))) vs {former} (round(r x n)), "
              f"{differ} passages differ")


if __name__ == "__main__":
    main()
