"""Adaptation objectives: the registry ``--objective`` names resolve in.

An objective is a small class (:class:`~dslbench.training.objective.Objective`, whose docstring
lists the hooks) registered in :data:`OBJECTIVES` (``register_objective`` adds one; the
soft-masking issue adds ``softmask`` this way). The training loop (:mod:`dslbench.training.loop`)
knows nothing else about it. Shipped: ``mdm`` (:mod:`~dslbench.training.mdm_objective`), ``dsl``
(:mod:`~dslbench.training.dsl_objective`), ``softmask``
(:mod:`~dslbench.training.softmask_objective`) and ``uniform``
(:mod:`~dslbench.training.uniform_objective`). The names most callers need are re-exported here.
"""

from __future__ import annotations

from typing import Any

from dslbench.training.dsl_objective import DSLObjective, place_response_values, response_token_loss
from dslbench.training.mdm_objective import MDM_EPS, MDMObjective, mdm_corrupt, mdm_loss
from dslbench.training.objective import (
    AdaptModule,
    LossOutput,
    Objective,
    ObjectiveError,
    decay_parameter_names,
    head_parameters,
    save_backbone,
)

# Name -> class, or a lazy "module:Class" string (imported only when that objective runs). The
# soft-masking objective is added here (or through register_objective) by its own module.
OBJECTIVES: dict[str, type[Objective] | str] = {
    "dsl": DSLObjective,
    "mdm": MDMObjective,
    "softmask": "dslbench.training.softmask_objective:SoftMaskObjective",
    "uniform": "dslbench.training.uniform_objective:UniformObjective",
}


def register_objective(name: str, cls: type[Objective] | str) -> None:
    """Add an objective (a class, or a lazy ``"module:Class"`` string)."""
    OBJECTIVES[name] = cls


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ObjectiveError(f"--objective {name!r} is not valid; allowed: {', '.join(sorted(OBJECTIVES))}")
    target = OBJECTIVES[name]
    if isinstance(target, str):
        import importlib

        module_name, cls_name = target.split(":")
        target = getattr(importlib.import_module(module_name), cls_name)
        OBJECTIVES[name] = target
    return target


def make_objective(name: str, **options: Any) -> Objective:
    return objective_class(name)(**options)

__all__ = [
    "AdaptModule", "LossOutput", "Objective", "MDMObjective", "DSLObjective", "OBJECTIVES", "ObjectiveError",
    "register_objective", "objective_class", "make_objective", "mdm_corrupt", "mdm_loss", "head_parameters",
    "place_response_values", "response_token_loss", "decay_parameter_names", "save_backbone", "MDM_EPS",
]
