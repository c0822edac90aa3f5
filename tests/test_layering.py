"""The house's layering is enforced: the import-linter contracts in pyproject.toml hold, a wrong
import breaks them with a message naming the contract, and no two modules import each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")
grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parent.parent
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"

# Import circles still open on other branches, each named with who removes it.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none left: add a pair only with the reason it must stay


def _lint(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: the lm-eval hook's .pth imports dslbench at start-up, from that folder.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module,wrong,contract", [
    ("report/_wrong.py", "from dslbench.harness import base", "reports read files, never run models"),
    ("diffusion/_wrong.py", "def f():\n    from dslbench.models import llada", "samplers never import a model class"),
    ("runs/_wrong.py", "from dslbench.report import build", "dslbench layers"),
])
def test_a_wrong_import_breaks_the_named_contract(tmp_path, module, wrong, contract):
    shutil.copytree(ROOT / "dslbench", tmp_path / "dslbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "dslbench" / module).write_text(wrong + "\n", encoding="utf-8")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert f"{contract} BROKEN" in res.stdout, res.stdout + res.stderr
    assert "dslbench." + module.removesuffix(".py").replace("/", ".") in res.stdout


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("dslbench")
    for pair in KNOWN_CYCLES:
        a, b = sorted(pair)
        if graph.direct_import_exists(importer=a, imported=b):
            graph.remove_import(importer=a, imported=b)
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle():
    graph = grimp.build_graph("dslbench")
    graph.add_import(importer="dslbench.fsio", imported="dslbench.cli")
    assert any({"dslbench.fsio", "dslbench.cli"} <= set(c) for c in _cycles(graph))
