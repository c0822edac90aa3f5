"""The examples of README.md and docs/*.md as tests, read by sybil's Markdown parsers.

Every ```bash / ```sh block runs, in order, in one scratch folder per page (so ``tiny`` made by
one block is there for the next). A block can be marked just before it:

* ``<!-- example: check-only REASON -->``: too long or needing a GPU, the hub or 8B weights; each
  command is parsed by the real argument parser of its program (dslbench's, lm_eval's) instead,
  so a removed command or flag still fails;
* ``<!-- skip: next "REASON" -->`` (sybil's own): not a dslbench / lm_eval command at all (a Slurm
  script, an install line).

The placeholders below stand for what the docs cannot name (a user's checkpoint, 8B weights on
the hub); in both modes they are replaced by tiny checkpoints this suite builds, and the hub's
summarization test sets by two-document local copies (``DSLBENCH_DATA_DIR``), so the command that
runs is the one on the page. ```python blocks run with sybil's Python parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
import unittest
from pathlib import Path

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
from sybil.evaluators.skip import Skipper
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# placeholder -> which tiny checkpoint stands in for it (keys of the ``checkpoints`` mapping)
PLACEHOLDERS = {
    "PATH/TO/DSL_CHECKPOINT": "dsl",
    "PATH/TO/CHECKPOINT": "llada",
    "GSAI-ML/LLaDA-8B-Instruct": "llada",
    "Dream-org/Dream-v0-Instruct-7B": "llada",
}
# datasets the hub serves; the docs test points DSLBENCH_DATA_DIR at two-document copies of them
SUMMARIZATION_SETS = ("xsum", "cnndm", "pubmed", "arxiv", "samsum")
# programs whose flags are not ours to check (install and cluster plumbing)
FOREIGN = {"pip", "pytest", "source", "sleep", "ray", "srun", "scontrol", "sbatch", "cd", "export", "grep", "head"}
MODES = ("check-only",)


class ExampleError(AssertionError):
    pass


def substitute(text: str, checkpoints: dict[str, Path]) -> str:
    for placeholder, kind in PLACEHOLDERS.items():
        text = text.replace(placeholder, str(checkpoints[kind]))
    return text


def commands(source: str) -> list[list[str]]:
    """Shell lines -> argv lists: continuations joined, comments dropped, ``&&`` / ``|`` split."""
    argvs: list[list[str]] = []
    for line in source.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in ("&&", "|", ";", "||"):
                argvs.append(current)
                current = []
            else:
                current.append(token)
        argvs.append(current)
    return [a for a in argvs if a]


def program(argv: list[str]) -> tuple[str, list[str]]:
    """Which parser an argv goes to, and the arguments it gets: ``dslbench``, ``lm_eval``, a
    ``python script``, or a foreign program. ``python -m X``, ``torchrun ... -m X`` and
    ``accelerate launch ... -m X`` are unwrapped to the module's own arguments."""
    head, rest = Path(argv[0]).name, argv[1:]
    if head in ("python", "python3", "torchrun", "accelerate"):
        if "-m" in rest:
            i = rest.index("-m")
            module, rest = rest[i + 1], rest[i + 2:]
            head = {"dslbench.cli": "dslbench", "lm_eval": "lm_eval", "pip": "pip", "pytest": "pytest"}.get(module, module)
        elif head.startswith("python") and rest and rest[0].endswith(".py"):
            return "script", rest
    if head in ("lm-eval", "lm_eval"):
        head = "lm_eval"
    return head, rest


def _lm_eval_argv(rest: list[str]):
    """lm_eval's own parser, as its ``cli_evaluate`` builds it (a bare flag list means ``run``)."""
    from lm_eval._cli import HarnessCLI

    old = sys.argv
    sys.argv = ["lm_eval", *rest]
    try:
        cli = HarnessCLI()
        return cli, cli.parse_args()
    finally:
        sys.argv = old


def _exit_code(fn) -> tuple[int, str]:
    """Run ``fn``; its exit status (argparse's SystemExit included) and what it wrote to stderr."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = fn()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return int(code or 0), err.getvalue()


def check(argv: list[str]) -> None:
    """Parse one command with its program's real parser (nothing runs)."""
    name, rest = program(argv)
    if name == "dslbench":
        import dslbench._lm_eval_hook  # noqa: F401
        from dslbench.cli import build_parser

        if rest[:1] == ["eval"]:
            name, rest = "lm_eval", rest[1:]
        else:
            code, err = _exit_code(lambda: build_parser(objective_args=rest[:1] == ["adapt"]).parse_args(rest) and 0)
            if code:
                raise ExampleError(f"`{shlex.join(argv)}` is refused by dslbench's parser: {err.strip()}")
            return
    if name == "lm_eval":
        code, err = _exit_code(lambda: _lm_eval_argv(rest) and 0)
        if code:
            raise ExampleError(f"`{shlex.join(argv)}` is refused by lm_eval's parser: {err.strip()}")
        return
    if name == "script":
        script = ROOT / rest[0]
        if not script.is_file():
            raise ExampleError(f"`{shlex.join(argv)}`: no script {rest[0]}")
        return
    if name not in FOREIGN:
        raise ExampleError(f"`{shlex.join(argv)}`: {name} is neither dslbench nor lm_eval; run it, or mark the "
                           "block <!-- skip: next \"REASON\" --> if it cannot run here")


def run(argv: list[str]) -> None:
    """Run one command in this process (dslbench, lm_eval) or as a subprocess (a script)."""
    name, rest = program(argv)
    if name == "dslbench" and rest[:1] != ["eval"]:
        from dslbench.cli import main

        code, err = _exit_code(lambda: main(rest))
    elif name in ("lm_eval", "dslbench"):
        rest = rest[1:] if name == "dslbench" else rest

        def evaluate():
            import dslbench._lm_eval_hook  # noqa: F401

            cli, args = _lm_eval_argv(rest)
            cli.execute(args)
            return 0

        code, err = _exit_code(evaluate)
    elif name == "script":
        done = subprocess.run([sys.executable, *rest], capture_output=True, text=True)
        code, err = done.returncode, done.stderr
    else:
        raise ExampleError(f"`{shlex.join(argv)}`: {name} cannot run in the docs test; mark the block "
                           "<!-- example: check-only REASON --> or <!-- skip: next \"REASON\" -->")
    if code:
        raise ExampleError(f"`{shlex.join(argv)}` exited with {code}: {err.strip()[-2000:]}")


def evaluate_mode(example) -> None:
    """``<!-- example: MODE REASON -->``: the next shell block runs in MODE; a reason is required."""
    mode, _, reason = example.region.lexemes["arguments"].strip().partition(" ")
    if mode not in MODES or not reason.strip():
        raise ExampleError(f"<!-- example: {mode} ... -->: expected one of {MODES} followed by a reason")
    example.namespace["next_mode"] = mode


def evaluate_shell(example) -> None:
    mode = example.namespace.pop("next_mode", "run")
    source = substitute(str(example.parsed), example.namespace["checkpoints"])
    for argv in commands(source):
        (check if mode == "check-only" else run)(argv)


class ModeParser:
    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer("example")

    def __call__(self, document):
        for region in self.lexer(document):
            region.evaluator = evaluate_mode
            yield region


def sybil_for_docs() -> Sybil:
    return Sybil(parsers=[
        ModeParser(),
        SkipParser(),
        *(CodeBlockParser(language=lang, evaluator=evaluate_shell) for lang in ("bash", "sh")),
        PythonCodeBlockParser(),
    ])


def _require_a_reason(example) -> None:
    """sybil's ``skip`` directive takes its reason as optional; here it is not."""
    if isinstance(example.region.evaluator, Skipper):
        action, reason = example.parsed
        if action == "next" and not (reason or "").strip('" '):
            raise ExampleError(f"{example.path}, line {example.line}: <!-- skip: next --> needs a reason: "
                               '<!-- skip: next "REASON" -->')


def run_examples(path: Path, checkpoints: dict[str, Path], workdir: Path) -> int:
    """Evaluate every example of one page in ``workdir``; the number of examples evaluated."""
    document = sybil_for_docs().parse(path)
    document.namespace["checkpoints"] = checkpoints
    old = os.getcwd()
    os.chdir(workdir)
    try:
        count = 0
        for example in document.examples():
            _require_a_reason(example)
            try:
                example.evaluate()
            except unittest.SkipTest:  # sybil's `skip: next "reason"`: that block only, the page goes on
                continue
            count += 1
        return count
    finally:
        os.chdir(old)
