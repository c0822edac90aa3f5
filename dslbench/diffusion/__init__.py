"""Model-agnostic diffusion math: the denoiser seam, corruption processes and samplers.

Nothing in this package imports a model class: samplers see only a :class:`Denoiser`.

Layer: bottom. May import ``data``, ``metrics`` and the utilities (``fsio``, ``errors``,
``paths``); never ``models`` (contract "samplers never import a model class"), nor anything above.
"""
