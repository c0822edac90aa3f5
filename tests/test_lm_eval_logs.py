"""dslbench's commands drop lm-eval's per-task usage notice; lm-eval itself is left as it is."""

from __future__ import annotations

import logging
import subprocess
import sys

from dslbench.harness.lm_eval_logs import LM_EVAL_TASK_LOGGER, LmEvalNoticeFilter, quiet_lm_eval

NOTICE = ("dsl_summ_synth_4step: Custom kwargs can be passed to `--metadata` in console (as json string) or to "
          "the TaskManager.\nFor example --metadata='{\"max_seq_lengths\":[4096, 8192]}'. For details see task Readme.")


def _record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(LM_EVAL_TASK_LOGGER, level, __file__, 1, msg, None, None)


def test_filter_drops_only_the_notice():
    f = LmEvalNoticeFilter()
    assert not f.filter(_record(NOTICE))
    assert f.filter(_record("dsl_summ_synth_4step: some real problem"))
    assert f.filter(_record("Building contexts for dsl_summ_synth_4step", logging.INFO))


def test_installed_once_on_lm_evals_task_logger(caplog):
    quiet_lm_eval()
    quiet_lm_eval()
    logger = logging.getLogger(LM_EVAL_TASK_LOGGER)
    assert sum(isinstance(f, LmEvalNoticeFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=LM_EVAL_TASK_LOGGER):
        logger.warning(NOTICE)
        logger.warning("a warning that stays")
    assert [r.getMessage() for r in caplog.records] == ["a warning that stays"]


def test_importing_dslbench_leaves_lm_eval_logging_alone():
    code = ("import logging, dslbench._lm_eval_hook, dslbench.harness.mdm_backend, dslbench.harness.dsl_backend; "
            f"print(len(logging.getLogger({LM_EVAL_TASK_LOGGER!r}).filters))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "0"  # a plain lm_eval run (which loads the plugin) keeps every lm-eval message
