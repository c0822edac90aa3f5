"""The tiny three-way comparison of ``baselines/tiny.yaml``: ``tiny-mdlm-<objective>:seed=N``
checkpoints (a tiny MDLM-format base adapted under one recipe), built on first use, and the
per-model ``tasks`` / ``budgets`` subsets that keep those rows to one cell each."""

from __future__ import annotations

import json

import pytest

from dslbench.paths import baselines_dir
from dslbench.runs.config import MatrixConfigError, ModelSpec, load_config, parse_config, plan
from dslbench.runs.model_args import resolve_model_args

ROWS = {"MDLM-tiny + mdm": "mdm_llada", "MDLM-tiny + softmask": "softmask_llada", "MDLM-tiny + dsl": "dsl_llada"}


def test_tiny_yaml_has_the_three_adapted_mdlm_rows_one_cell_each():
    tiny = load_config(baselines_dir() / "tiny.yaml")
    rows = {m.name: m for m in tiny.models if m.name in ROWS}
    assert {n: m.backend for n, m in rows.items()} == ROWS
    cells = [c for c in plan(tiny) if c.model.name in ROWS]
    assert sorted((c.model.name, c.budget, tuple(c.tasks)) for c in cells) == sorted(
        (n, 16, ("dsl_gen_synth_16step",)) for n in ROWS)
    # the other rows keep the whole matrix
    llada = [c for c in plan(tiny) if c.model.name == "LLaDA"]
    assert len(llada) == len(tiny.budgets) + 1


def _raw(**model):
    return {"models": [{"name": "M", "backend": "mdm_llada", "model_args": {}, **model}],
            "tasks": ["dsl_summ_synth_{nfe}step", "dsl_repair_synth_random_10"], "budgets": [4, 8]}


def test_model_task_and_budget_subsets(tmp_path):
    cfg = parse_config(_raw(tasks=["dsl_repair_synth_random_10"]), out=tmp_path)
    assert [(c.budget, c.tasks) for c in plan(cfg)] == [(None, ["dsl_repair_synth_random_10"])]
    cfg = parse_config(_raw(budgets=[8]), out=tmp_path)
    assert [(c.budget, c.tasks) for c in plan(cfg)] == [(8, ["dsl_summ_synth_8step"]),
                                                        (None, ["dsl_repair_synth_random_10"])]
    for bad, key in ((dict(tasks=["dsl_gen_synth_{nfe}step"]), "tasks"), (dict(budgets=[16]), "budgets"),
                     (dict(tasks=[]), "tasks"), (dict(budgets="8"), "budgets")):
        with pytest.raises(MatrixConfigError, match=rf"models\[0\] \(M\): {key} must be a non-empty list drawn from"):
            parse_config(_raw(**bad), out=tmp_path)


def test_tiny_mdlm_specs_resolve_and_build_on_first_use(tmp_path):
    for kind in ("tiny-mdlm", "tiny-mdlm-mdm", "tiny-mdlm-softmask", "tiny-mdlm-dsl"):
        spec = ModelSpec("M", "mdm_llada", {"pretrained": f"{kind}:seed=2"})
        assert resolve_model_args(spec, tmp_path, build=False) == {"pretrained": str(tmp_path / f"{kind}-seed2")}
    assert not any(tmp_path.iterdir())  # nothing built by a check
    spec = ModelSpec("M", "mdm_llada", {"pretrained": "tiny-mdlm-mdm:seed=2"})
    where = resolve_model_args(spec, tmp_path)["pretrained"]
    record = json.loads((tmp_path / "tiny-mdlm-mdm-seed2" / "adapt_config.json").read_text())
    assert record["objective"] == "mdm" and record["steps"] == 6
    assert json.loads((tmp_path / "tiny-mdlm-seed2" / "config.json").read_text())["model_type"] == "mdlm"
    stamp = (tmp_path / "tiny-mdlm-mdm-seed2" / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_args(spec, tmp_path)["pretrained"] == where
    assert (tmp_path / "tiny-mdlm-mdm-seed2" / "model.safetensors").stat().st_mtime_ns == stamp  # built once
