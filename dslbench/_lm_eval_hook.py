"""Make a plain ``lm_eval`` see dslbench's backends and tasks.

lm-eval 0.4.x discovers no plugins, so the ``dslbench_lm_eval.pth`` file that the wheel puts at
the root of site-packages imports this module at interpreter start-up. All it does then is put a
tiny finder on ``sys.meta_path`` (no torch, no lm_eval import: start-up stays free). The finder
acts only when lm-eval itself loads two of its modules:

* ``lm_eval.models``: after lm-eval registers its own backends, ours are added as lazy
  ``"module:Class"`` placeholders (the model code is imported only when selected);
* ``lm_eval.tasks.manager``: ``TaskManager`` is wrapped so that its default search path also
  holds dslbench's task folder (a user's ``--include_path`` still comes later and wins).

Errors raised while doing that are *not* swallowed: a broken dslbench install must show up as an
error in lm-eval, never as a silently missing backend. ``pip uninstall dslbench`` removes the
``.pth`` file and with it every effect of this module.
"""

from __future__ import annotations

import sys

# lm-eval model name -> lazy target, kept here so registration never imports torch.
BACKENDS = {
    "mdm_llada": "dslbench.harness.mdm_backend:MDMLLaDA",
    "dsl_llada": "dslbench.harness.dsl_backend:DSLLLaDA",
    "softmask_llada": "dslbench.harness.softmask_backend:SoftMaskLLaDA",
    "diffusiongemma": "dslbench.harness.diffusiongemma_backend:DiffusionGemma",
}
# Family-neutral names of the same backends (they also read MDLM-format checkpoints).
ALIASES = {"mdm": "mdm_llada", "softmask": "softmask_llada"}

_TARGETS = ("lm_eval.models", "lm_eval.tasks.manager")


def register_backends() -> None:
    from lm_eval.api.registry import model_registry

    for name, target in [*BACKENDS.items(), *((alias, BACKENDS[name]) for alias, name in ALIASES.items())]:
        if name not in model_registry:
            model_registry.register(name, target=target)


def patch_task_manager(manager_module) -> None:
    cls = manager_module.TaskManager
    if getattr(cls.__init__, "_dslbench_wrapped", False):
        return
    original = cls.__init__

    def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        if include_defaults:
            from dslbench.paths import tasks_dir

            extra = [] if include_path is None else (
                list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
            )
            include_path = [str(tasks_dir()), *extra]
        original(
            self,
            verbosity=verbosity,
            include_path=include_path,
            include_defaults=include_defaults,
            metadata=metadata,
        )

    __init__._dslbench_wrapped = True  # type: ignore[attr-defined]
    __init__.__doc__ = original.__doc__
    cls.__init__ = __init__


def _after_load(name: str, module) -> None:
    if name == "lm_eval.models":
        register_backends()
    elif name == "lm_eval.tasks.manager":
        patch_task_manager(module)


class _Loader:
    # Duck-typed (no importlib.abc import): start-up cost stays near zero.
    def __init__(self, inner, name):
        self._inner = inner
        self._name = name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _after_load(self._name, module)


class _Finder:
    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        # Ask the remaining finders for the real spec, then wrap its loader.
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    # lm_eval may already have been imported (hook installed late, e.g. in tests).
    if "lm_eval.models" in sys.modules:
        register_backends()
    if "lm_eval.tasks.manager" in sys.modules:
        patch_task_manager(sys.modules["lm_eval.tasks.manager"])


install()
