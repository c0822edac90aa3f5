"""Every shell / Python example of README.md and docs/*.md runs on tiny models, or is parsed by
its program's real parser where it cannot run here (tests/docs_examples.py says how a block is
marked and which placeholders stand for what)."""

from __future__ import annotations

import json

import pytest

from tests.docs_examples import DOC_FILES, SUMMARIZATION_SETS, ExampleError, run_examples


@pytest.fixture(scope="module")
def checkpoints(tiny_ckpt, untrained_dsl_ckpt):
    return {"llada": tiny_ckpt, "dsl": untrained_dsl_ckpt}


@pytest.fixture(scope="module", autouse=True)
def task_index_once():
    """lm-eval scans its ~15,000 task YAMLs each time a command builds a TaskManager (about 10 s
    on 2 cores); the pages run several lm_eval commands in this process, so the scan of a given
    set of folders is kept for the module. The tasks themselves still load from their YAMLs."""
    from lm_eval.tasks._index import TaskIndex

    scans = {}
    build = TaskIndex.build

    def build_once(paths, **kwargs):
        paths = list(paths)
        key = (tuple(str(p) for p in paths), tuple(sorted(kwargs.items())))
        if key not in scans:
            scans[key] = build(paths, **kwargs)
        return dict(scans[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskIndex, "build", staticmethod(build_once))
        yield


@pytest.fixture
def hub_data(tmp_path, monkeypatch):
    """The hub's summarization test sets, as two-document local copies (DSLBENCH_DATA_DIR)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in SUMMARIZATION_SETS:
        rows = [{"id": f"{name}-{i}", "document": f"Document {i} of {name}. The river rose after the storm and "
                 "the town closed the bridge until the water fell again.", "summary": "The bridge closed."}
                for i in range(2)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("DSLBENCH_DATA_DIR", str(folder))
    return folder


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_examples_of_page(path, checkpoints, hub_data, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    run_examples(path, checkpoints, work)


BROKEN = '''# A page

<!-- example: check-only the hub -->
```bash
dslbench leaderboard --config baselines/tiny.yaml --no-such-flag
```
'''


@pytest.mark.parametrize("page, message", [
    (BROKEN, "--no-such-flag"),
    (BROKEN.replace("leaderboard --config baselines/tiny.yaml --no-such-flag", "no-such-command"), "no-such-command"),
    (BROKEN.replace("dslbench leaderboard --config baselines/tiny.yaml --no-such-flag",
                    "lm_eval --model mdm_llada --tasks x --no_such_lm_eval_flag"), "no_such_lm_eval_flag"),
    (BROKEN.replace("<!-- example: check-only the hub -->\n", "").replace("--no-such-flag", "--dry-run --models Nobody"),
     "exited with 2"),
    (BROKEN.replace("dslbench leaderboard", "sbatch job.sh; dslbench leaderboard").replace("check-only the hub", "check-only"),
     "followed by a reason"),
    (BROKEN.replace("<!-- example: check-only the hub -->\n", "").replace(
        "dslbench leaderboard --config baselines/tiny.yaml --no-such-flag", "torchrun --nproc_per_node 2 train.py"),
     "cannot run in the docs test"),
    (BROKEN.replace("<!-- example: check-only the hub -->", "<!-- skip: next -->"), "needs a reason"),
    (BROKEN.replace("dslbench leaderboard --config baselines/tiny.yaml --no-such-flag",
                    "python benchmarks/no_such_benchmark.py"), "no script"),
])
def test_a_broken_example_fails(tmp_path, checkpoints, page, message):
    doc = tmp_path / "page.md"
    doc.write_text(page)
    with pytest.raises(ExampleError, match=message.replace("-", r"\-")):
        run_examples(doc, checkpoints, tmp_path)


def test_a_working_example_passes(tmp_path, checkpoints):
    doc = tmp_path / "page.md"
    doc.write_text(BROKEN.replace(" --no-such-flag", " --dry-run"))
    assert run_examples(doc, checkpoints, tmp_path) == 2


def test_no_code_block_escapes_the_examples():
    """A block in a language the examples do not run (```shell, ```console, ```zsh ...) would be
    skipped silently: only the languages below may appear (yaml / plain blocks show data or output)."""
    from sybil import Document
    from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

    lexer = FencedCodeBlockLexer(language=r"[\w+-]*")
    for path in DOC_FILES:
        document = Document(path.read_text(), str(path))
        languages = {region.lexemes["language"] for region in lexer(document)}
        assert languages <= {"bash", "sh", "python", "yaml", ""}, f"{path.name}: {sorted(languages)}"
