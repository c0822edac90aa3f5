"""Model-arg parsing, per-request options, padding detection and the stats channel."""

from __future__ import annotations

import pytest

from dslbench.harness.args import Arg, parse_args
from dslbench.harness.base import DiffusionBackend
from dslbench.harness.mdm_backend import MDM_ARGS, MDMLLaDA
from dslbench.metrics.sample_stats import attach_stats, split_stats

SPECS = {"nfe": Arg(16, int), "mode": Arg("a", str, ("a", "b")), "flag": Arg(False, bool), "t": Arg(0.0, float)}


def test_defaults_and_conversion():
    out = parse_args("x", SPECS, {"nfe": "8", "flag": "true", "t": "0.5"})
    assert out == {"nfe": 8, "mode": "a", "flag": True, "t": 0.5}


def test_unknown_arg_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model arg\(s\) nfee.*Valid model args: flag, mode, nfe, t"):
        parse_args("mdm_llada", SPECS, {"nfee": 8})


def test_bad_choice_names_argument_and_allowed_values():
    with pytest.raises(ValueError, match=r"mode='c' is not allowed; choose one of: a, b"):
        parse_args("x", SPECS, {"mode": "c"})


def test_bad_type_names_argument():
    with pytest.raises(ValueError, match=r"nfe='many': expected an int"):
        parse_args("x", SPECS, {"nfe": "many"})
    with pytest.raises(ValueError, match=r"flag='maybe': expected true or false"):
        parse_args("x", SPECS, {"flag": "maybe"})


def _bare_backend() -> MDMLLaDA:
    # request_options needs only the declared defaults, not a loaded model.
    backend = MDMLLaDA.__new__(MDMLLaDA)
    backend.defaults = {k: v.default for k, v in MDM_ARGS.items()}
    return backend


def test_generation_kwargs_override_defaults():
    opts = _bare_backend().request_options({"nfe": 8, "gen_length": 32, "until": "\n\n", "return_stats": True})
    assert opts["nfe"] == 8 and opts["gen_length"] == 32
    assert opts["until"] == ["\n\n"] and opts["return_stats"] is True
    assert opts["remasking"] == "low_confidence"


def test_max_gen_toks_maps_to_gen_length_unless_explicit():
    b = _bare_backend()
    assert b.request_options({"max_gen_toks": 48})["gen_length"] == 48
    assert b.request_options({"max_gen_toks": 48, "gen_length": 64})["gen_length"] == 64


def test_unsupported_generation_kwarg_is_an_error():
    with pytest.raises(ValueError, match=r"unsupported generation kwarg\(s\) top_p"):
        _bare_backend().request_options({"top_p": 0.9})
    with pytest.raises(ValueError, match="remasking='best' is not allowed"):
        _bare_backend().request_options({"remasking": "best"})


class _Req:
    def __init__(self, repeats=1):
        self.repeats = repeats


def test_padding_requests_are_detected_by_identity():
    a, b, c = _Req(), _Req(), _Req(repeats=2)
    # lm-eval pads a rank by appending its last request object again (``repeats`` copies each time).
    assert DiffusionBackend._padding_mask([a, b, b]) == [False, False, True]
    assert DiffusionBackend._padding_mask([a, c, c, c, c]) == [False, False, False, True, True]
    assert DiffusionBackend._padding_mask([a, b]) == [False, False]


def test_stats_round_trip_and_plain_text():
    text = attach_stats("a summary.", {"nfe": 16, "gen_tokens": 12})
    assert split_stats(text) == ("a summary.", {"nfe": 16, "gen_tokens": 12})
    assert split_stats("plain") == ("plain", None)


def test_cut_until():
    assert DiffusionBackend._cut_until("one. two\n\nthree", ["\n\n", "three"]) == "one. two"
    assert DiffusionBackend._cut_until("one", []) == "one"


def test_over_long_prompts_lose_their_middle_not_the_instruction():
    ids = list(range(100))
    assert DiffusionBackend._fit_prompt(ids, 200) == ids
    cut = DiffusionBackend._fit_prompt(ids, 40)
    # tail = min(32, 40 // 4) = 10 tokens kept from the end, the first 30 from the start
    assert cut == list(range(30)) + list(range(90, 100))
    assert len(DiffusionBackend._fit_prompt(ids, 3)) == 3


# ----------------------------------------------------------------------------- declared ranges
@pytest.mark.parametrize("backend, arg, value, allowed", [
    ("mdm", "steps", 0, ">= 1"),
    ("mdm", "block_length", 0, ">= 1"),
    ("mdm", "nfe", 0, ">= 1"),
    ("mdm", "temperature", -1, ">= 0"),
    ("mdm", "temperature", "nan", ">= 0"),
    ("mdm", "cfg", -1, ">= 0"),
    ("mdm", "remdm_alpha_on", 1.0, r"in \(0, 1\)"),
    ("dsl", "beta", 0, "> 0"),
    ("dsl", "beta", -2.5, "> 0"),
    ("dsl", "topk", 0, ">= 1"),
    ("softmask", "scale", 1.0, r"in \[0, 1\)"),
    ("softmask", "centre", 0.0, "< 0"),
])
def test_values_outside_the_declared_range_are_refused_by_name(backend, arg, value, allowed):
    from dslbench.harness.base import COMMON_ARGS
    from dslbench.harness.dsl_backend import DSL_ARGS
    from dslbench.harness.softmask_backend import SOFTMASK_ARGS

    specs = {"mdm": MDM_ARGS, "dsl": DSL_ARGS, "softmask": SOFTMASK_ARGS}[backend]
    with pytest.raises(ValueError, match=rf"model arg {arg}=.*allowed: {allowed}"):
        parse_args(backend, {**COMMON_ARGS, **specs}, {arg: value})


def test_in_range_values_and_none_defaults_pass():
    out = parse_args("mdm", MDM_ARGS, {"steps": 1, "temperature": 0, "cfg": 0.5, "block_length": 8})
    assert out["steps"] == 1 and out["temperature"] == 0.0 and out["block_length"] == 8
    assert parse_args("mdm", MDM_ARGS, {})["steps"] is None  # None = derive from the budget


def test_a_task_value_is_checked_too():
    with pytest.raises(ValueError, match=r"model arg nfe=0 is out of range; allowed: >= 1"):
        _bare_backend().request_options({"nfe": 0})
    with pytest.raises(ValueError, match=r"max_gen_toks=0 is out of range"):
        _bare_backend().request_options({"max_gen_toks": 0})


def test_a_task_overriding_a_model_arg_is_warned_once(caplog):
    b = _bare_backend()
    b.NAME = "mdm_llada"
    b.defaults["nfe"], b.defaults["gen_length"] = 4, 64
    b._given = {"nfe", "gen_length"}  # what the user wrote in --model_args
    with caplog.at_level("WARNING", logger="dslbench.harness.base"):
        for _ in range(3):
            opts = b.request_options({"nfe": 16, "max_gen_toks": 64})
    assert opts["nfe"] == 16  # the task's value is what runs
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["mdm_llada: model arg nfe=4 is overridden by the task's generation kwargs (nfe=16 is used)"]


# ----------------------------------------------------------------------------- data parallel set-up
class _FakeAccelerator:
    made: list[dict] = []
    processes = 2

    def __init__(self, **kwargs):
        _FakeAccelerator.made.append(kwargs)
        self.process_index, self.num_processes = 1, _FakeAccelerator.processes
        self.distributed_type = "MULTI_CPU" if kwargs.get("cpu") else "NO"
        self.device = "cpu:1"


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"OMPI_COMM_WORLD_SIZE": "2"}])
def test_a_cpu_launch_asks_accelerate_for_cpu_ranks(monkeypatch, env):
    import accelerate
    import torch

    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(accelerate, "Accelerator", _FakeAccelerator)
    _FakeAccelerator.made.clear()
    b = _bare_backend()
    b.args = {"device": "cpu"}
    b._setup_distributed()
    # without cpu=True accelerate sets up no process group on a CPU host: every rank was rank 0 of 1
    assert _FakeAccelerator.made == [{"cpu": True}]
    assert (b.rank, b.world_size, b.device) == (1, 2, torch.device("cpu"))
    _FakeAccelerator.processes = 1
    try:
        with pytest.raises(RuntimeError, match="launched as 2 processes but accelerate set up 1"):
            b._setup_distributed()
    finally:
        _FakeAccelerator.processes = 2
