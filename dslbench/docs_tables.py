"""The docs' reference tables, generated from the code so they are never typed twice.

A page holds a table between two markers::

    <!-- BEGIN GENERATED: model-args mdm_llada -->
    ...
    <!-- END GENERATED -->

and ``python -m dslbench.docs_tables --write`` rewrites what lies between them; ``--check``
(what ``tests/test_docs_tables.py`` runs) exits 1 naming every stale table. The kinds:

* ``model-args common`` / ``model-args BACKEND``: the declared :class:`~dslbench.harness.args.Arg`
  specs (default, type, allowed values, help) of :data:`~dslbench.harness.base.COMMON_ARGS` and of
  each backend's ``SAMPLER_ARGS``;
* ``tasks FAMILY``: the task and group names of ``tasks/FAMILY/**.yaml`` with their budgets;
* ``metrics FAMILY``: the ``metric_list`` of those tasks (aggregation, direction).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from dslbench._lm_eval_hook import BACKENDS  # lm-eval `--model` name -> backend class
from dslbench.paths import tasks_dir

MARKER = re.compile(r"(<!-- BEGIN GENERATED: (?P<key>[^>]*?) -->\n)(?P<body>.*?)(<!-- END GENERATED -->)", re.S)
DOCS = Path(__file__).resolve().parents[1] / "docs"


def task_families() -> list[str]:
    """The folders of ``tasks/`` that hold task YAMLs (summarization, repair, open_ended, ...)."""
    return sorted(p.name for p in tasks_dir().iterdir() if p.is_dir() and any(p.rglob("*.yaml")))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _allowed(spec) -> str:
    if spec.choices is not None:
        return ", ".join(f"`{c}`" for c in spec.choices)
    if spec.kind is bool:
        return "`true`, `false`"
    parts = [str(spec.valid)] if spec.valid is not None else []
    if spec.kind is int and spec.ceiling is not None:
        parts.append(f"<= {spec.ceiling}")
    return ", ".join(parts) or "any"


def model_args_table(which: str) -> str:
    if which == "common":
        from dslbench.harness.base import COMMON_ARGS as specs
    else:
        module, _, name = BACKENDS[which].partition(":")
        specs = getattr(importlib.import_module(module), name).SAMPLER_ARGS
    rows = ["| arg | default | type | allowed | meaning |", "|---|---|---|---|---|"]
    for arg, spec in specs.items():
        kind = spec.kind.__name__ if spec.kind is not None else "any"
        rows.append(f"| `{arg}` | {_value(spec.default)} | {kind} | {_cell(_allowed(spec))} | {_cell(spec.help)} |")
    return "\n".join(rows) + "\n"


class _TaskLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs without running them: ``!function x.y`` stays the text ``x.y``."""


_TaskLoader.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node))


def _load(path: Path) -> dict:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader) or {}
    if "include" in data:  # lm-eval's include: the included file's keys, overridden by this one's
        data = {**_load(path.parent / data.pop("include")), **data}
    return data


def _task_files(family: str) -> list[dict]:
    folder = tasks_dir() / family
    if not folder.is_dir():
        raise ValueError(f"no task family {family!r} under {tasks_dir()}")
    return [_load(p) for p in sorted(folder.rglob("*.yaml")) if not p.name.startswith("_")]


def tasks_table(family: str) -> str:
    """One row per task name pattern: the budgets a name comes in (``..._{4,8}step``) merged."""
    budgets: dict[tuple, list[int]] = defaultdict(list)
    for data in _task_files(family):
        name = data.get("task") if "task" in data and isinstance(data["task"], str) else data.get("group")
        if name is None:
            continue
        kind = "group" if "group" in data else "task"
        gen = (data.get("generation_kwargs") or {})
        match = re.fullmatch(r"(.*_)(\d+)(step)", name)
        key = (match.group(1) + "{N}" + match.group(3) if match else name, kind,
               gen.get("gen_length", "-") if kind == "task" else "-",
               len(data["task"]) if kind == "group" else "-")
        budgets[key].append(int(match.group(2)) if match else 0)
    rows = ["| name | kind | NFE budgets N | generated tokens | member tasks |", "|---|---|---|---|---:|"]
    for (name, kind, gen_length, members), values in sorted(budgets.items()):
        nfe = ", ".join(str(v) for v in sorted(values)) if "{N}" in name else "-"
        rows.append(f"| `{name}` | {kind} | {nfe} | {gen_length} | {members} |")
    return "\n".join(rows) + "\n"


def metrics_table(family: str) -> str:
    seen: dict[str, tuple[str, str]] = {}
    for data in _task_files(family):
        for entry in data.get("metric_list") or []:
            aggregation = str(entry.get("aggregation", "mean")).rsplit(".", 1)[-1]
            better = {True: "higher", False: "lower"}.get(entry.get("higher_is_better"), "-")
            seen.setdefault(entry["metric"], (aggregation, better))
    rows = ["| metric | aggregation over documents | better |", "|---|---|---|"]
    rows += [f"| `{m}` | `{agg}` | {better} |" for m, (agg, better) in seen.items()]
    return "\n".join(rows) + "\n"


GENERATORS = {"model-args": model_args_table, "tasks": tasks_table, "metrics": metrics_table}


def render(key: str) -> str:
    kind, _, arg = key.partition(" ")
    if kind not in GENERATORS:
        raise ValueError(f"unknown generated table {key!r}; kinds: {', '.join(GENERATORS)}")
    return GENERATORS[kind](arg.strip())


def regenerate(text: str) -> str:
    return MARKER.sub(lambda m: m.group(1) + render(m.group("key")) + m.group(4), text)


def stale_pages(pages: list[Path], write: bool) -> list[str]:
    """Pages whose generated tables differ from the code (rewritten when ``write``)."""
    stale = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        fresh = regenerate(text)
        if fresh != text:
            stale.append(str(page))
            if write:
                page.write_text(fresh, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dslbench.docs_tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated tables in place")
    mode.add_argument("--check", action="store_true", help="exit 1 naming every page whose tables are stale")
    parser.add_argument("pages", nargs="*", type=Path, help="Markdown pages (default: docs/*.md)")
    args = parser.parse_args(argv)
    stale = stale_pages(args.pages or sorted(DOCS.glob("*.md")), write=args.write)
    for page in stale:
        print(f"{'rewrote' if args.write else 'stale generated table in'} {page}", file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
