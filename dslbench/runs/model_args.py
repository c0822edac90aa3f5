"""A leaderboard model's args: ``${VAR}`` expansion, the ``tiny:`` / ``tiny-dsl:`` / ``tiny-dg:`` /
``tiny-mdlm[-mdm|-softmask|-dsl]:`` checkpoints built on first use (and the ``tiny-gpt2:`` evaluator of the task metadata),
and the check of every model arg against its backend's declared args before anything runs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dslbench.runs.config import Cell, MatrixConfig, MatrixConfigError, ModelSpec

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TINY = re.compile(r"^(tiny|tiny-dsl|tiny-dg|tiny-mdlm|tiny-mdlm-mdm|tiny-mdlm-softmask|tiny-mdlm-dsl):seed=(\d+)$")
# spec kind -> the checkpoint directory's name prefix under the models folder
_TINY_DIRS = {"tiny": "tiny-base", "tiny-dsl": "tiny-dsl", "tiny-dg": "tiny-dg", "tiny-gpt2": "tiny-gpt2",
              "tiny-mdlm": "tiny-mdlm", "tiny-mdlm-mdm": "tiny-mdlm-mdm", "tiny-mdlm-softmask": "tiny-mdlm-softmask",
              "tiny-mdlm-dsl": "tiny-mdlm-dsl"}
_TINY_EVALUATOR = re.compile(r"^tiny-gpt2:seed=(\d+)$")


def _tiny_dir(kind: str, seed: int, models_dir: Path) -> Path:
    return models_dir / f"{_TINY_DIRS[kind]}-seed{seed}"


def expand_arg(model: str, key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ and os.environ[var] != "":
            return os.environ[var]
        if default is not None:
            return default
        raise MatrixConfigError(f"model {model!r}: model arg {key} needs the environment variable {var} "
                                f"(set {var}=<checkpoint path or hub id>)")

    out = _ENV.sub(sub, value)
    if re.search(r"<[^<>]+>", out):
        raise MatrixConfigError(f"model {model!r}: model arg {key}={out!r} is a placeholder; put a real "
                                "checkpoint path or hub id there")
    return out


def _tiny_checkpoint(kind: str, seed: int, models_dir: Path) -> Path:
    from dslbench.models.tiny import make_tiny

    if kind.startswith("tiny-mdlm"):
        return _tiny_mdlm_checkpoint(kind, seed, models_dir)
    if kind == "tiny-dg":  # a random tiny DiffusionGemma (its own tokenizer, trained like the base's)
        path = _tiny_dir(kind, seed, models_dir)
        if not (path / "config.json").exists():
            make_tiny(path, seed=seed, family="diffusiongemma")
        return path
    base = _tiny_dir("tiny", seed, models_dir)
    if not (base / "config.json").exists():
        make_tiny(base, seed=seed)
    if kind == "tiny":
        return base
    dsl_dir = _tiny_dir(kind, seed, models_dir)
    if not (dsl_dir / "dsl_config.json").exists():
        from dslbench.diffusion.dsl import DSLModules
        from dslbench.models.dsl_checkpoint import save_dsl_checkpoint
        from dslbench.models.loading import load_llada

        model, tokenizer, info = load_llada(base)
        dsl = DSLModules(info.vocab_size, 16, model.config.d_model, beta_init=2.0, noise_seed=seed)
        dsl.init_from_backbone(model.get_input_embeddings().weight, info.mask_id)
        save_dsl_checkpoint(model, dsl, tokenizer, dsl_dir,
                            {"beta_train": 2.0, "max_steps": 0, "data": "none (untrained DSL modules on the tiny base)"})
    return dsl_dir


def _tiny_mdlm_checkpoint(kind: str, seed: int, models_dir: Path) -> Path:
    """``tiny-mdlm``: a random tiny MDLM-format base; ``tiny-mdlm-<objective>``: that base after the
    tiny adaptation recipe (:mod:`dslbench.training.tiny_adapt`) with the objective."""
    from dslbench.models.tiny import make_tiny

    base = _tiny_dir("tiny-mdlm", seed, models_dir)
    if not (base / "config.json").exists():
        make_tiny(base, seed=seed, family="mdlm")
    if kind == "tiny-mdlm":
        return base
    out = _tiny_dir(kind, seed, models_dir)
    if not (out / "adapt_config.json").exists():  # written last: a complete adapted checkpoint
        from dslbench.training.tiny_adapt import adapt_tiny

        adapt_tiny(base, out, kind.removeprefix("tiny-mdlm-"), seed=seed)
    return out


def resolve_metadata(metadata: dict[str, Any], models_dir: Path, build: bool = True) -> dict[str, Any]:
    """The task metadata with ``${VAR}`` expanded and a ``tiny-gpt2:seed=N`` evaluator
    (``ppl_model``) replaced by its folder, built on first use."""
    out = {k: expand_arg("metadata", k, v) for k, v in metadata.items()}
    spec = out.get("ppl_model")
    if isinstance(spec, str) and (m := _TINY_EVALUATOR.match(spec)):
        path = _tiny_dir("tiny-gpt2", int(m.group(1)), models_dir)
        if build and not (path / "config.json").exists():
            from dslbench.models.tiny_evaluator import make_tiny_gpt2

            make_tiny_gpt2(path, seed=int(m.group(1)))
        out["ppl_model"] = str(path)
    return out


def resolve_model_args(spec: ModelSpec, models_dir: Path, build: bool = True) -> dict[str, Any]:
    args = {k: expand_arg(spec.name, k, v) for k, v in spec.model_args.items()}
    pre = args.get("pretrained")
    if isinstance(pre, str) and (m := _TINY.match(pre)):
        kind, seed = m.group(1), int(m.group(2))
        args["pretrained"] = str(_tiny_checkpoint(kind, seed, models_dir) if build else _tiny_dir(kind, seed, models_dir))
    return args


def _known_tasks() -> set[str] | None:
    try:
        from dslbench.paths import tasks_dir

        root = tasks_dir()
    except FileNotFoundError:
        return None
    names = set()
    for f in root.rglob("*.yaml"):
        for line in f.read_text(encoding="utf-8").splitlines():
            if m := re.match(r"^(task|group):\s*([A-Za-z0-9_.-]+)\s*$", line):
                names.add(m.group(2))
    return names


def _check_backend_args(spec: ModelSpec, args: dict[str, Any]) -> None:
    """The backend exists and every model arg is one it declares, with an allowed value: the
    same parsing the backend does when lm-eval creates it, without loading a model."""
    import importlib

    from dslbench._lm_eval_hook import BACKENDS
    from dslbench.harness.args import parse_args

    if spec.backend not in BACKENDS:
        raise MatrixConfigError(f"model {spec.name!r}: unknown backend {spec.backend!r}; "
                                f"choose one of: {', '.join(sorted(BACKENDS))}")
    module, _, cls_name = BACKENDS[spec.backend].partition(":")
    backend = getattr(importlib.import_module(module), cls_name)
    from dslbench.harness.base import COMMON_ARGS

    if not args.get("pretrained"):
        raise MatrixConfigError(f"model {spec.name!r}: model_args needs pretrained (a checkpoint directory or hub id)")
    try:
        parse_args(spec.backend, {**COMMON_ARGS, **backend.SAMPLER_ARGS}, args)
    except ValueError as err:
        raise MatrixConfigError(f"model {spec.name!r}: {err}") from None


def _local_checkpoint(spec: ModelSpec) -> Path | None:
    """The local folder ``pretrained`` names, or None: a ``tiny:`` spec (built on first use) or a
    hub id (which cannot be checked offline; its download is checked when it loads)."""
    try:
        pre = expand_arg(spec.name, "pretrained", spec.model_args.get("pretrained"))
    except MatrixConfigError:  # an unset variable: reported by the check of the model args
        return None
    if not isinstance(pre, str) or not pre or _TINY.match(pre):
        return None
    path = Path(pre).expanduser()
    looks_local = pre.startswith((".", "/", "~")) or "\\" in pre or pre.count("/") > 1
    return path if path.exists() or looks_local else None


def _check_checkpoint(spec: ModelSpec, args: dict[str, Any] | None, seen: dict[Path, list[str]]) -> list[str]:
    """The problems of the model's local checkpoint (see :mod:`dslbench.models.preflight`), and
    token counts its context cannot hold, each naming the model."""
    from dslbench.harness.args import CONTEXT_ARGS, check_context, model_context, parse_args
    from dslbench.models.loading import read_config_json
    from dslbench.models.preflight import checkpoint_problems

    path = _local_checkpoint(spec)
    if path is None:
        return []
    key = Path(os.path.abspath(path))
    if (key, spec.backend) not in seen:
        seen[(key, spec.backend)] = checkpoint_problems(path, spec.backend)
    problems = [f"model {spec.name!r}: {p}" for p in seen[(key, spec.backend)]]
    if problems:
        return problems
    found = model_context(read_config_json(path))
    if found is not None and args is not None:
        import importlib

        from dslbench._lm_eval_hook import BACKENDS
        from dslbench.harness.base import COMMON_ARGS

        module, _, cls_name = BACKENDS[spec.backend].partition(":")
        specs = {**COMMON_ARGS, **getattr(importlib.import_module(module), cls_name).SAMPLER_ARGS}
        parsed = parse_args(spec.backend, specs, args)
        given = {k: parsed[k] for k in ("max_length", *CONTEXT_ARGS) if k in args and k in parsed}
        try:
            check_context(spec.backend, given, found[0], f"{found[1]}={found[0]} in {path}/config.json")
        except ValueError as err:
            problems.append(f"model {spec.name!r}: {err}")
    return problems


def check_config(config: MatrixConfig, cells: list[Cell], checkpoints: bool = True) -> None:
    """Refuse, before anything runs: unset variables / placeholders, unknown backends, model args
    a backend does not declare or values outside their range, local checkpoints that are missing
    or incomplete (:func:`_check_checkpoint`; ``tiny:`` specs are built later and hub ids cannot
    be checked offline; ``checkpoints=False`` skips them), and unknown dslbench task names. Every
    problem of every model is reported in one error."""
    problems = []
    seen: dict = {}
    for m in config.models:
        try:
            args = resolve_model_args(m, config.output / "models", build=False)
            _check_backend_args(m, args)
        except MatrixConfigError as err:
            problems.append(str(err))
            args = None
        if checkpoints:
            problems.extend(_check_checkpoint(m, args, seen))
    try:
        resolve_metadata(config.metadata, config.output / "models", build=False)
    except MatrixConfigError as err:
        problems.append(str(err))
    known = _known_tasks()
    if known:
        wanted = sorted({t for c in cells for t in c.tasks if t.startswith("dsl_")})
        missing = [t for t in wanted if t not in known]
        if missing:
            problems.append(f"unknown dslbench task(s): {', '.join(missing)}")
    if problems:
        where = f"{config.path}: " if config.path else ""
        raise MatrixConfigError(where + "; ".join(problems))
