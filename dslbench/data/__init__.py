"""dslbench.data: the documents the tasks read: seeded synthetic corpus, prompts, local JSONL / hub loading.

Layer: bottom (with ``models``, ``diffusion``, ``metrics``). May import the utilities
(``fsio``, ``errors``, ``paths``) and its bottom-layer siblings; never ``training``, ``harness``,
``runs``, ``report`` or the faces.
"""
