"""dslbench.harness: the lm-eval backends (``mdm_llada``, ``dsl_llada``, ``softmask_llada``,
``diffusiongemma``), their declared model args, and the evaluation of one cell (one lm-eval call,
``run.py``).

Layer: above the bottom. May import ``models``, ``diffusion``, ``data``, ``metrics`` and the
utilities; never ``training`` (a sibling), ``runs``, ``report`` or the faces.
"""
