"""Every shell / Python example of README.md and docs/*.md runs on tiny models, or is parsed by
its program's real parser where it cannot run here (tests/docs_examples.py says how a block is
marked and which placeholders stand for what)."""

from __future__ import annotations

import pytest

from tests.docs_examples import DOC_FILES, ExampleError, run_examples


@pytest.fixture(scope="module")
def checkpoints(tiny_ckpt, untrained_dsl_ckpt):
    return {"llada": tiny_ckpt, "dsl": untrained_dsl_ckpt}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_examples_of_page(path, checkpoints, tmp_path):
    run_examples(path, checkpoints, tmp_path)


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
