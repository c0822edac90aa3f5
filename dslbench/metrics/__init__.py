"""dslbench.metrics: exactly defined per-sample metrics (import-light: import the submodules).

- ``text``: word tokenisation shared by all metrics
- ``rouge``: ROUGE-1/2/L F1 x 100 (rouge-score, stemmer)
- ``length``, ``repetition``, ``degeneration``, ``newsroom``: the figures behind
- ``summary``: ``summary_metrics`` / ``SUMMARY_METRICS`` / ``HIGHER_IS_BETTER``
- ``repair``: selective-corruption repair fix / preserve rates (token and word level)
- ``efficiency``: NFE, generated tokens, seconds per sample, tokens per forward
- ``open_ended``: the released open-ended metrics (GenPPL, D2 / D3, Rep, words, n_valid, empty)
- ``uncond``: unconditional generation as ReMDM scores it (per-sample token entropy, token-pooled GenPPL)
- ``evaluator``: the GenPPL / MAUVE evaluator causal LM (loaded once per process), MAUVE
- ``sample_stats``: the per-sample record a backend attaches to a response and tasks / reports split off

Layer: bottom. May import its bottom-layer siblings and the utilities; nothing above.
"""
