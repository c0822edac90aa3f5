"""dslbench: few-step evaluation and robustness benchmarks for diffusion language models.

Layers, bottom to top (``pyproject.toml`` ``[tool.importlinter]``, checked by the tests): the
utilities ``fsio`` / ``errors`` / ``paths`` / ``_lm_eval_hook``; ``models`` / ``diffusion`` /
``data`` / ``metrics``; ``training`` and ``harness``; ``runs``; ``report``; the faces ``cli`` /
``demo`` / ``regress``. A layer imports only the layers below it.

Kept import-light on purpose: the lm-eval hook imports this package at interpreter start-up,
so nothing heavy (torch, transformers, lm_eval) may be imported here.
"""

__version__ = "0.1.0"
