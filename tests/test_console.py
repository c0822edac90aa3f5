"""The console of dslbench's own commands: quiet by default (one bar per long phase, one line per
finished cell, no third-party notices), everything back with --verbose, and lm-eval's own
console (``lm_eval`` / ``dslbench eval``) left as lm-eval makes it."""

from __future__ import annotations

import io
import logging
import shutil
import sys

import pytest
import yaml

from dslbench.console import BarFilter, console, quiet


@pytest.fixture(scope="module")
def config(tiny_ckpt, tiny_gpt2, tmp_path_factory):
    """One cell: the tiny model at NFE 4 on a summarization task and an open-ended task scored
    with MAUVE (whose faiss clustering warns on so few points)."""
    out = tmp_path_factory.mktemp("console")
    shutil.copytree(tiny_ckpt, out / "models" / "tiny-base-seed0")  # the cached tiny base (same seed)
    path = out / "console.yaml"
    path.write_text(yaml.safe_dump({
        "name": "console", "output": str(out), "limit": 4, "seed": 0, "batch_size": 4, "budgets": [4],
        "headline_nfe": 4, "metadata": {"ppl_model": str(tiny_gpt2)},
        "tasks": ["dsl_summ_synth_{nfe}step", "dsl_gen_synth_{nfe}step"],
        "models": [{"name": "LLaDA", "backend": "mdm_llada", "model_args": {"pretrained": "tiny:seed=0"}}],
    }))
    return path


def _console(capfd, caplog, config, *flags) -> list[str]:
    """stdout, stderr (at the file descriptors: faiss writes to fd 2 from C) and the log records
    (which pytest takes from Python's logging before they reach stderr)."""
    from dslbench.cli import main

    caplog.clear()
    assert main(["leaderboard", "--config", str(config), "--force", *flags]) == 0
    out, err = capfd.readouterr()
    records = [f"{r.levelname}:{r.name}:{r.getMessage()}" for r in caplog.records]
    return [line for line in (out + err).replace("\r", "\n").splitlines() if line.strip()] + records


def test_quiet_by_default_one_line_per_finished_cell(config, capfd, caplog):
    lines = _console(capfd, caplog, config)
    text = "\n".join(lines)
    for noise in ("clustering", "Custom kwargs", "mdm_llada generate", "Featurizing", "Loading weights",
                  "Removed shared tensor", "[transformers]"):
        assert noise not in text, noise
    third_party = [line for line in lines if line.startswith(("INFO", "WARNING", "DEBUG")) and ":dslbench" not in line]
    assert not third_party
    (finished,) = [line for line in lines if "finished in" in line]
    assert "LLaDA @ NFE 4" in finished and "rouge1" in finished and "genppl" in finished and "(NFE 4)" in finished
    assert any(line.startswith("evaluating:") for line in lines)  # the evaluation's one bar
    assert not quiet() and not isinstance(sys.stderr, BarFilter)  # nothing left behind


def test_verbose_brings_the_third_party_lines_back(config, capfd, caplog):
    text = "\n".join(_console(capfd, caplog, config, "--verbose"))
    for line in ("clustering", "Custom kwargs", "mdm_llada generate", "Featurizing"):
        assert line in text, line
    assert "LLaDA @ NFE 4: evaluating" in text and "evaluating:" not in text


def test_lm_eval_pass_through_keeps_its_console(monkeypatch):
    import lm_eval.__main__

    from dslbench.cli import main

    seen = []
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: seen.append((quiet(), type(sys.stderr))))
    assert main(["eval", "--model", "dsl_llada", "--tasks", "x"]) == 0
    assert seen == [(False, type(sys.stderr))] and seen[0][1] is not BarFilter


def test_console_restores_levels_and_filters_only_named_warnings():
    import warnings

    logger = logging.getLogger("lm_eval")
    before = logger.level
    with console():
        assert logging.getLogger("lm_eval").getEffectiveLevel() == logging.ERROR
    assert logger.level == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console():
            warnings.warn("`past_key_values` as a tuple is deprecated", FutureWarning)
            warnings.warn("input truncated to 512 tokens", UserWarning)  # dslbench's own: shown
    assert [str(w.message) for w in caught] == ["input truncated to 512 tokens"]
    with console(verbose_flag=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("`past_key_values` as a tuple is deprecated", FutureWarning)
    assert len(caught) == 1


def test_bar_filter_drops_bars_and_keeps_lines():
    stream = io.StringIO()
    bars = BarFilter(stream)
    for write in ["hello", "\n", "\n", "\r bar 1/2", "\x1b[A", "", "\r bar 2/2", "\n", "line\n", "x", "\n", "\n", "y\n"]:
        bars.write(write)
    bars.close_held()
    assert stream.getvalue() == "hello\nline\nx\n\ny\n"
