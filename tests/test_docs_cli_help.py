"""`dslbench --help` and each sub-command's `--help`: what it does, one example that the real
parser accepts, and a docs page that exists, all within the first screen."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from dslbench.cli import build_parser
from tests.docs_examples import check, substitute

ROOT = Path(__file__).resolve().parents[1]
SCREEN = 24  # lines of a terminal


def parsers():
    top = build_parser(objective_args=True)
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return [("dslbench", top), *subs.choices.items()]


@pytest.mark.parametrize("name, parser", parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_help_has_an_example_and_a_docs_page(name, parser, tmp_path):
    text = parser.format_help() if parser.add_help else parser.description
    head = text.splitlines()[:SCREEN]
    example = re.search(r"^example:\n  (.+)$", "\n".join(head), re.M)
    page = re.search(r"^docs: (\S+)$", "\n".join(head), re.M)
    assert example and page, f"{name}: no example / docs line in the first {SCREEN} lines of its help:\n{text}"
    assert (ROOT / page.group(1)).is_file(), f"{name}: docs page {page.group(1)} does not exist"
    argv = shlex.split(substitute(example.group(1), {"llada": tmp_path, "dsl": tmp_path}))
    assert argv[:2] == ["dslbench", name] or name == "dslbench", argv
    check(argv)  # the real parser (dslbench's, or lm_eval's for `eval`) accepts the example
