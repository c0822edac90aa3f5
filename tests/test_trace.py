"""``dslbench trace``: per-step traces of the three backends on tiny checkpoints, the page, the CLI."""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch

from dslbench.cli import main
from dslbench.diffusion.dsl_denoiser import OracleDSLDenoiser
from dslbench.diffusion.sde import SDEStepTrace, dsl_generate, plan_steps
from dslbench.harness.dsl_backend import DSLLLaDA
from dslbench.harness.mdm_backend import MDMLLaDA
from dslbench.harness.softmask_backend import SoftMaskLLaDA
from dslbench.report.trace import adjacent_repeats, duplicate_commits, first_eos, render_trace
from dslbench.runs.files import MASK_GLYPH, read_trace_json, write_trace_json
from dslbench.runs.trace import TraceArgumentError, check_request, trace_backend

PROMPT = "Summarize the following text in one sentence: the cat sat on the mat and looked at the dog."
GEN = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Req:
    def __init__(self, context, gen_kwargs, repeats=1):
        self.args = (context, gen_kwargs)
        self.repeats = repeats


def _backend_text(lm, nfe: int, gen_length: int = GEN) -> str:
    (text,) = lm.generate_until([Req(PROMPT, {"nfe": nfe, "gen_length": gen_length, "until": []})], disable_tqdm=True)
    return text


@pytest.fixture(scope="module")
def mdm(tiny_ckpt):
    return MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt}", {"batch_size": 1})


@pytest.fixture(scope="module")
def softmask(tiny_ckpt):
    # centre near the tiny model's entropy (~log 806) so that lambda is visibly above 0
    return SoftMaskLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},scale=0.6,centre=-7.0", {"batch_size": 1})


@pytest.fixture(scope="module")
def dsl(untrained_dsl_ckpt):
    return DSLLLaDA.create_from_arg_string(f"pretrained={untrained_dsl_ckpt}", {"batch_size": 1})


@pytest.fixture(scope="module")
def traces(mdm, softmask, dsl, tiny_ckpt, untrained_dsl_ckpt):
    return [
        trace_backend("mdm_llada", f"pretrained={tiny_ckpt}", PROMPT, nfe=4, gen_length=GEN, backend=mdm),
        trace_backend("softmask_llada", f"pretrained={tiny_ckpt},scale=0.6,centre=-7.0", PROMPT, nfe=4,
                      gen_length=GEN, backend=softmask),
        trace_backend("dsl_llada", f"pretrained={untrained_dsl_ckpt}", PROMPT, nfe=8, gen_length=GEN, backend=dsl),
    ]


def _check_commit_invariants(trace):
    """A visible token never changes unless that step remasked it; commits fill masked slots."""
    prev_tokens = [trace.mask_id] * trace.gen_length
    prev_masked = [True] * trace.gen_length
    commits = remasks = 0
    for row in trace.rows:
        for i in range(trace.gen_length):
            if row.new[i]:
                assert prev_masked[i], f"step {row.step} committed position {i}, which was not masked"
                assert not row.masked[i] and row.score[i] is not None and 0.0 < row.score[i] <= 1.0
            elif row.remasked[i]:
                assert row.masked[i]
            elif not prev_masked[i]:
                assert row.tokens[i] == prev_tokens[i], f"step {row.step} changed committed position {i}"
                assert not row.masked[i]
            else:
                assert row.masked[i] and row.score[i] is None
        commits += sum(row.new)
        remasks += sum(row.remasked)
        prev_tokens, prev_masked = row.tokens, row.masked
    assert commits - remasks == trace.gen_length
    assert not any(trace.rows[-1].masked)


# ------------------------------------------------------------------ masked diffusion
@pytest.mark.parametrize("nfe", [2, 4, 16])
def test_mdm_trace_has_one_row_per_call_and_ends_in_the_backend_output(mdm, tiny_ckpt, nfe):
    trace = trace_backend("mdm_llada", f"pretrained={tiny_ckpt}", PROMPT, nfe=nfe, gen_length=GEN, backend=mdm)
    assert len(trace.rows) == trace.steps == trace.nfe == nfe
    assert [r.nfe for r in trace.rows] == list(range(1, nfe + 1))
    assert [r.step for r in trace.rows] == list(range(nfe))
    assert trace.rows[-1].tokens == trace.final_tokens
    assert trace.text == _backend_text(mdm, nfe)
    assert mdm._decode(torch.tensor(trace.final_tokens))[0] == trace.text
    _check_commit_invariants(trace)
    # LLaDA's schedule: 16 masks over nfe steps, remainder first
    assert [sum(r.new) for r in trace.rows] == [GEN // nfe + (i < GEN % nfe) for i in range(nfe)]


def test_mdm_trace_with_cfg_blocks_and_remdm(tiny_ckpt):
    lm = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},cfg=1.0,block_length=8", {"batch_size": 1})
    trace = trace_backend("mdm_llada", "cfg", PROMPT, nfe=8, gen_length=GEN, backend=lm)
    assert len(trace.rows) == trace.steps == 4 and trace.nfe == 8  # CFG: two calls a step
    assert [r.nfe for r in trace.rows] == [2, 4, 6, 8]
    assert trace.rows[-1].tokens == trace.final_tokens and trace.text == _backend_text(lm, 8)
    assert not any(trace.rows[1].masked[:8]) and all(trace.rows[1].masked[8:])  # block 1 done first
    _check_commit_invariants(trace)

    lm = MDMLLaDA.create_from_arg_string(f"pretrained={tiny_ckpt},remdm=rescale,remdm_eta=0.5", {"batch_size": 1})
    trace = trace_backend("mdm_llada", "remdm", PROMPT, nfe=16, gen_length=GEN, backend=lm)
    assert len(trace.rows) == trace.nfe == 16
    assert sum(sum(r.remasked) for r in trace.rows) > 0  # ReMDM did send committed tokens back
    assert trace.rows[-1].tokens == trace.final_tokens and trace.text == _backend_text(lm, 16)
    _check_commit_invariants(trace)


def test_softmask_trace_shows_lambda_and_matches_the_backend(traces, softmask):
    trace = traces[1]
    assert len(trace.rows) == trace.nfe == 4
    assert trace.text == _backend_text(softmask, 4) and trace.rows[-1].tokens == trace.final_tokens
    _check_commit_invariants(trace)
    first = trace.rows[0]
    assert first.lam == [0.0] * GEN  # the first step feeds the plain mask embedding
    for prev, row in zip(trace.rows, trace.rows[1:]):
        assert [v is not None for v in row.lam] == prev.masked  # lambda of the positions fed masked
        values = [v for v in row.lam if v is not None]
        assert values and all(0.0 < v < trace.settings["scale"] for v in values)
    assert trace.settings["k"] == 1 and trace.settings["scale"] == pytest.approx(0.6)


# ------------------------------------------------------------------ DSL
@pytest.mark.parametrize("nfe,calls", [(8, [2, 4, 6, 7, 8]), (5, [2, 4, 5]), (2, [1, 2]), (1, [1])])
def test_dsl_trace_rows_follow_the_step_plan(dsl, untrained_dsl_ckpt, nfe, calls):
    trace = trace_backend("dsl_llada", f"pretrained={untrained_dsl_ckpt}", PROMPT, nfe=nfe, gen_length=GEN, backend=dsl)
    plan = plan_steps(nfe)
    assert trace.nfe == nfe == plan.calls and trace.steps == plan.steps
    assert len(trace.rows) == plan.steps + 1 and [r.nfe for r in trace.rows] == calls
    assert [r.kind for r in trace.rows] == ["heun"] * plan.heun + ["euler"] * plan.euler + ["final"]
    snrs = [r.snr for r in trace.rows]
    assert snrs == pytest.approx(plan.grid.tolist())
    assert trace.rows[-1].tokens == trace.final_tokens
    assert trace.text == _backend_text(dsl, nfe)
    for row in trace.rows:
        assert len(row.nearest) == GEN and all(0.0 < p <= 1.0 for p in row.score)
        assert not any(row.masked)


def test_sde_trace_hook_changes_neither_output_nor_nfe():
    target = torch.tensor([3, 5, 1, 7, 2, 9, 0, 4])
    prompt = torch.tensor([[1, 2, 3, 4]])
    runs = []
    for traced in (False, True):
        seam = OracleDSLDenoiser(target)
        steps: list[SDEStepTrace] = []
        out = dsl_generate(seam, prompt, gen_length=8, nfe=8, topk=4, generator=torch.Generator().manual_seed(3),
                           trace=steps.append if traced else None)
        runs.append((out, steps, seam.nfe))
    (plain, _, nfe_plain), (traced, steps, nfe_traced) = runs
    assert torch.equal(plain.tokens, traced.tokens) and torch.equal(plain.y, traced.y)
    assert plain.nfe == traced.nfe == nfe_plain == nfe_traced == 8
    assert len(steps) == traced.plan.steps == 4
    for st in steps:
        assert st.probs.shape == st.tokens.shape == (1, 8)
        assert bool(((st.probs > 0) & (st.probs <= 1)).all())


# ------------------------------------------------------------------ helpers
def test_row_helpers_hand_computed():
    tokens = [7, 7, 3, 7, 9, 9, 5]
    new = [True, True, False, True, True, False, True]
    assert duplicate_commits(tokens, new) == 3  # 7 committed at positions 0, 1 and 3
    assert adjacent_repeats(tokens) == 2
    assert adjacent_repeats(tokens, [False, True, False, False, False, False, False]) == 1
    assert first_eos([4, 1, 2], (1, 2)) == 1 and first_eos([4], (1,)) is None


def test_bad_arguments_name_the_argument():
    with pytest.raises(TraceArgumentError, match=r"--backend 'llada'.*mdm_llada, softmask_llada, dsl_llada"):
        check_request(["llada"], ["pretrained=x"], 4, None, "p")
    with pytest.raises(TraceArgumentError, match="--nfe"):
        check_request(["mdm_llada"], ["pretrained=x"], 0, None, "p")
    with pytest.raises(TraceArgumentError, match="--gen-length"):
        check_request(["mdm_llada"], ["pretrained=x"], 4, 0, "p")
    with pytest.raises(TraceArgumentError, match="--model-args"):
        check_request(["mdm_llada", "dsl_llada"], ["pretrained=a", "pretrained=b", "pretrained=c"], 4, None, "p")
    with pytest.raises(TraceArgumentError, match="pretrained"):
        check_request(["mdm_llada"], ["gen_length=4"], 4, None, "p")
    with pytest.raises(TraceArgumentError, match="--prompt"):
        check_request(["mdm_llada"], ["pretrained=x"], 4, None, "  ")
    assert check_request(["mdm_llada", "dsl_llada"], ["pretrained=a"], 4, None, "p") == [
        ("mdm_llada", "pretrained=a"), ("dsl_llada", "pretrained=a")]


# ------------------------------------------------------------------ page
def test_page_is_self_contained_and_pngs_are_valid(traces, tmp_path):
    import matplotlib.image as mpimg

    rendered, paths = render_trace(write_trace_json(traces, tmp_path / "out", PROMPT))
    assert rendered == traces
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    assert "url(" not in page and "@import" not in page
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert len(sources) == len(traces) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert page.count('<table class="trace">') == len(traces)
    assert "DSLBENCH-TRACE" not in page and MASK_GLYPH in page
    for t in traces:
        assert f"{t.backend}: {t.nfe} NFE" in page
    pngs = sorted(p for k, p in paths.items() if k.startswith("png"))
    assert len(pngs) == len(traces)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and data in embedded
        assert mpimg.imread(io.BytesIO(data), format="png").ndim == 3
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]
    import json

    payload = json.loads(paths["json"].read_text())
    assert [len(b["rows"]) for b in payload["backends"]] == [len(t.rows) for t in traces]


def test_trace_json_reads_back_as_recorded(traces, tmp_path):
    """The report draws from the file, so the file must hold everything the recorder saw."""
    path = write_trace_json(traces, tmp_path, PROMPT)
    assert read_trace_json(path) == (traces, PROMPT)
    path.write_text('{"prompt": "p"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a dslbench trace file"):
        read_trace_json(path)


# ------------------------------------------------------------------ CLI
def test_cli_end_to_end_on_tiny_checkpoints(tiny_ckpt, untrained_dsl_ckpt, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main([
        "trace", "--backend", "mdm_llada,softmask_llada", "--model-args", f"pretrained={tiny_ckpt}",
        "--model-args", f"pretrained={tiny_ckpt},scale=0.3", "--compare", "dsl_llada",
        "--model-args", f"pretrained={untrained_dsl_ckpt}", "--prompt", PROMPT, "--nfe", "4", "--gen-length", "8",
        "--chat", "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in ("mdm_llada", "softmask_llada", "dsl_llada"):
        assert f"[{name}] NFE 4 (budget 4)" in printed and f"[{name}] text:" in printed
    assert (out / "trace.html").is_file() and (out / "trace.json").is_file()
    assert sorted(p.name for p in out.glob("*.png")) == [
        "trace_1_mdm_llada.png", "trace_2_softmask_llada.png", "trace_3_dsl_llada.png"]


@pytest.mark.parametrize("argv,message", [
    (["--backend", "llada", "--model-args", "pretrained=X", "--nfe", "4"], "--backend 'llada' is not supported"),
    (["--backend", "mdm_llada", "--model-args", "pretrained=X", "--nfe", "0"], "--nfe must be"),
    (["--backend", "mdm_llada", "--model-args", "pretrained=X,bogus=1", "--nfe", "4"], "unknown model arg(s) bogus"),
    (["--backend", "dsl_llada", "--model-args", "pretrained=X", "--nfe", "4"], "is not a DSL checkpoint"),
    (["--backend", "mdm_llada", "--model-args", "pretrained=X,block_length=8", "--nfe", "3"], "cannot be split evenly"),
])
def test_cli_bad_arguments_exit_2_with_a_clear_message(tiny_ckpt, tmp_path, capsys, argv, message):
    argv = [a.replace("pretrained=X", f"pretrained={tiny_ckpt}") for a in argv]
    rc = main(["trace", *argv, "--prompt", "hi", "--gen-length", "16", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "trace.html").exists()
