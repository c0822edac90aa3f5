"""Fault injection (#21.9): the process is killed at every crash point of ``dslbench.fsio``
(``DSLBENCH_CRASH_AT=N``) during a tiny ``adapt`` run, a tiny leaderboard and ``make-tiny``;
the next run must resume or clean up and end byte-identical to an uninterrupted run. Also:
read-only outputs and a full disk end as one-line errors with exit 2.

Runs are forked from the test process (torch is imported once), so a kill is a real
``os._exit`` with no cleanup. The default run kills at a few chosen points; the exhaustive
sweeps over every point are marked ``slow``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import traceback
from pathlib import Path

import pytest
import torch

from dslbench import fsio

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fault injection forks the test process (POSIX only)")


def _in_child(fn, **env: str) -> int:
    """Run ``fn()`` in a forked child with ``env`` set; its exit code (CRASH_EXIT when killed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            torch.set_num_threads(1)  # the parent's thread pool does not survive a fork
            os.environ.update(env)
            fn()
            code = 0
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _trace(fn, tmp_path: Path) -> list[tuple[int, str, str]]:
    """Run ``fn()`` here (which also warms the caches the forked runs inherit), recording its
    crash points."""
    path = tmp_path / f"trace-{len(list(tmp_path.glob('trace-*')))}.tsv"
    os.environ[fsio.TRACE_ENV] = str(path)
    fsio._counter.update(pid=-1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the forked runs: the same sums in the same order, the same bytes
    try:
        fn()
    finally:
        torch.set_num_threads(threads)
        del os.environ[fsio.TRACE_ENV]
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [(int(n), kind, p) for n, kind, p in rows]


def _files(root: Path, skip=()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part in skip for part in p.relative_to(root).parts)}


# ------------------------------------------------------------------------------------------------
# the facility itself


def test_crash_point_counts_kinds_and_leaves_half_a_write(tmp_path):
    target = tmp_path / "a.json"

    def two_writes():
        fsio.write_text_atomic("x" * 100, target)
        fsio.write_text_atomic("y" * 100, target)

    # the 2nd write: the first is complete, the second left half of its bytes in a temp file
    assert _in_child(two_writes, **{fsio.CRASH_ENV: "2:write"}) == fsio.CRASH_EXIT
    assert target.read_text() == "x" * 100
    (tmp,) = tmp_path.glob(".a.json.tmp-*")
    assert tmp.read_text() == "y" * 50
    # the 1st rename: nothing in place yet
    target.unlink()
    tmp.unlink()
    assert _in_child(two_writes, **{fsio.CRASH_ENV: "1:rename"}) == fsio.CRASH_EXIT
    assert not target.exists()
    # an unknown kind is refused, not ignored
    with pytest.raises(ValueError, match="unknown kind"):
        os.environ[fsio.CRASH_ENV] = "1:explode"
        try:
            fsio.crash_point("write", target)
        finally:
            del os.environ[fsio.CRASH_ENV]
    # the next writer removes the dead process's temp file first (a counted delete), then writes
    trace = _trace(two_writes, tmp_path)
    assert [k for _, k, _ in trace] == ["delete", "write", "rename", "write", "rename"]
    assert not list(tmp_path.glob(".a.json.tmp-*")) and target.read_text() == "y" * 100


def test_atomic_writes_follow_the_umask(tmp_path):
    from safetensors.torch import save_file

    old = os.umask(0o027)
    try:
        path = tmp_path / "w.safetensors"
        with fsio.written_file(path):
            save_file({"a": torch.zeros(2)}, str(path))  # safetensors itself creates 0600
        text = fsio.write_text_atomic("{}", tmp_path / "c.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(text.stat().st_mode) == 0o640


# ------------------------------------------------------------------------------------------------
# adapt


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from dslbench.data.synth import make_summarization_examples

    path = tmp_path_factory.mktemp("fi-data") / "pairs.jsonl"
    rows = make_summarization_examples(4, seed=3, split="train")
    path.write_text("".join(json.dumps({"prompt": r["document"][:80], "response": r["summary"][:40]}) + "\n"
                            for r in rows))
    return path


def _adapt(base, out, data, resume=False):
    from dslbench.training.loop import AdaptConfig, run_adapt

    def go():
        run_adapt(AdaptConfig(base=str(base), out=str(out), objective="dsl", data=str(data), max_steps=2,
                              batch_size=2, seq_len=48, response_len=8, warmup_steps=0, lr=1e-3, save_every=1,
                              keep_checkpoints=1, progress=False, resume=resume, objective_options={"noise_dim": 8}))
    return go


@pytest.fixture(scope="module")
def adapt_reference(tiny_ckpt, pairs, tmp_path_factory):
    root = tmp_path_factory.mktemp("fi-adapt")
    trace = _trace(_adapt(tiny_ckpt, root / "ref", pairs), root)
    return root / "ref", trace


# Run files that differ between any two runs (timings), compared without those fields.
_TIMED = {"adapt_config.json": ("tokens_per_s_this_session",), "dsl_config.json": ()}


def _check_adapt_like_reference(out: Path, ref: Path) -> None:
    final = _files(out, skip={"checkpoints", "adapt_log.jsonl", "adapt_run.json"})
    expected = _files(ref, skip={"checkpoints", "adapt_log.jsonl", "adapt_run.json"})
    assert sorted(final) == sorted(expected)
    for name, data in expected.items():
        if name in _TIMED:
            a, b = json.loads(final[name]), json.loads(data)
            for key in _TIMED[name]:
                a.pop(key, None), b.pop(key, None)
            assert a == b, name
        else:
            assert final[name] == data, name  # the weights, byte for byte
    assert not [p for p in out.rglob(".*")], "leftovers of the killed run"
    assert not [p for p in out.parent.glob(f".{out.name}*")]
    rows = [json.loads(line) for line in (out / "adapt_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "event" not in r] == [1, 2]  # each step exactly once


def _kill_and_resume_adapt(n: int, tiny_ckpt, pairs, root: Path, ref: Path) -> None:
    out = root / f"kill{n}"
    assert _in_child(_adapt(tiny_ckpt, out, pairs), **{fsio.CRASH_ENV: str(n)}) == fsio.CRASH_EXIT, n
    code = _in_child(_adapt(tiny_ckpt, out, pairs, resume=True))
    assert code == 0, f"resume after a kill at crash point {n} failed"
    _check_adapt_like_reference(out, ref)


def _chosen(trace, *wanted) -> list[int]:
    """Crash points of a trace picked by (kind, substring of the path): the first match of each."""
    picked = []
    for kind, part in wanted:
        hits = [n for n, k, p in trace if k == kind and part in p]
        assert hits, (kind, part)
        picked.append(hits[0])
    return picked


def test_adapt_killed_at_chosen_points_resumes_to_identical_weights(adapt_reference, tiny_ckpt, pairs, tmp_path):
    ref, trace = adapt_reference
    points = _chosen(trace,
                     ("write", "adapt_run.json"),       # the first file: a torn temp file is all there is
                     ("append", "adapt_log.jsonl"),     # a torn log line
                     ("delete", ".trash-step-"),        # half-pruned old resume state
                     ("write", "safetensors"),          # a torn final shard in the staging folder
                     ("rename", "config.json"))         # final files moved, config.json not yet back
    points.append(trace[-1][0])                          # the staging folder's removal
    for n in points:
        _kill_and_resume_adapt(n, tiny_ckpt, pairs, tmp_path, ref)


@pytest.mark.slow
def test_adapt_killed_at_every_crash_point(adapt_reference, tiny_ckpt, pairs, tmp_path):
    ref, trace = adapt_reference
    assert len(trace) >= 20
    for n, _, _ in trace:
        _kill_and_resume_adapt(n, tiny_ckpt, pairs, tmp_path, ref)


def test_adapt_fresh_run_after_a_kill_before_any_resume_state(adapt_reference, tiny_ckpt, pairs, tmp_path):
    """A run killed before its first resume state holds nothing to continue: a new run without
    --resume (#21.7: it used to refuse the folder) starts it afresh."""
    ref, trace = adapt_reference
    for n in _chosen(trace, ("write", "adapt_run.json"), ("rename", "adapt_run.json"), ("append", "adapt_log")):
        out = tmp_path / f"fresh{n}"
        assert _in_child(_adapt(tiny_ckpt, out, pairs), **{fsio.CRASH_ENV: str(n)}) == fsio.CRASH_EXIT
        assert _in_child(_adapt(tiny_ckpt, out, pairs)) == 0
        _check_adapt_like_reference(out, ref)


def test_adapt_resume_after_the_last_checkpoint_keeps_the_final_loss(adapt_reference, tiny_ckpt, pairs, tmp_path):
    ref, trace = adapt_reference
    out = tmp_path / "late"
    (n,) = _chosen(trace, ("write", "safetensors"))
    assert _in_child(_adapt(tiny_ckpt, out, pairs), **{fsio.CRASH_ENV: str(n)}) == fsio.CRASH_EXIT
    assert _in_child(_adapt(tiny_ckpt, out, pairs, resume=True)) == 0
    loss = json.loads((out / "adapt_config.json").read_text())["final_loss"]
    assert loss is not None and loss == json.loads((ref / "adapt_config.json").read_text())["final_loss"]


# ------------------------------------------------------------------------------------------------
# make-tiny (its staging folders under models/)


def test_make_tiny_killed_anywhere_is_cleaned_up(tmp_path):
    from dslbench.models.tiny import make_tiny

    texts = [f"the council met on day {i} to discuss the river" for i in range(200)]
    ref = tmp_path / "ref" / "tiny"
    trace = _trace(lambda: make_tiny(ref, seed=0, texts=texts), tmp_path)
    expected = _files(ref)
    for n, _, _ in trace:
        out = tmp_path / f"k{n}" / "tiny"
        make_tiny(out, seed=1, texts=texts)  # a previous checkpoint is being replaced
        assert _in_child(lambda: make_tiny(out, seed=0, texts=texts), **{fsio.CRASH_ENV: str(n)}) == fsio.CRASH_EXIT
        make_tiny(out, seed=0, texts=texts)
        assert _files(out) == expected
        assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"], "staging leftovers"


# ------------------------------------------------------------------------------------------------
# leaderboard


def _leaderboard(tiny_ckpt, out: Path):
    from dslbench.cli import run_leaderboard
    from dslbench.runs.config import parse_config

    raw = {"name": "fi", "limit": 2, "seed": 0, "budgets": [4], "tasks": ["dsl_summ_synth_{nfe}step"],
           "models": [{"name": "LLaDA", "backend": "mdm_llada", "model_args": {"pretrained": str(tiny_ckpt)}}]}
    return lambda: run_leaderboard(parse_config(raw, out=out), log=lambda s: None, n_boot=20)


@pytest.fixture(scope="module")
def leaderboard_reference(tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("fi-lb")
    trace = _trace(_leaderboard(tiny_ckpt, root / "ref"), root)
    return root / "ref", trace


def _kill_and_rerun_leaderboard(n: int, tiny_ckpt, root: Path, ref: Path) -> None:
    out = root / f"kill{n}"
    assert _in_child(_leaderboard(tiny_ckpt, out), **{fsio.CRASH_ENV: str(n)}) == fsio.CRASH_EXIT, n
    assert _in_child(_leaderboard(tiny_ckpt, out)) == 0
    assert (out / "leaderboard.csv").read_bytes() == (ref / "leaderboard.csv").read_bytes()
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name or p.name.endswith((".partial", ".old"))]


def test_leaderboard_killed_at_chosen_points(leaderboard_reference, tiny_ckpt, tmp_path):
    ref, trace = leaderboard_reference
    points = _chosen(trace, ("rename", "done.json"), ("write", "leaderboard.csv"))
    for n in points:
        _kill_and_rerun_leaderboard(n, tiny_ckpt, tmp_path, ref)


@pytest.mark.slow
def test_leaderboard_killed_at_every_crash_point(leaderboard_reference, tiny_ckpt, tmp_path):
    ref, trace = leaderboard_reference
    for n, _, _ in trace:
        _kill_and_rerun_leaderboard(n, tiny_ckpt, tmp_path, ref)


# ------------------------------------------------------------------------------------------------
# read-only outputs and a full disk: exit 2, the path and the cause in one line


def _adapt_cli(base, out, data) -> list[str]:
    return ["adapt", "--base", str(base), "--out", str(out), "--data", str(data), "--objective", "mdm",
            "--max-steps", "2", "--batch-size", "2", "--seq-len", "48", "--response-len", "8", "--save-every", "1",
            "--warmup-steps", "0", "--no-progress"]


def test_adapt_into_a_read_only_folder(adapt_reference, tiny_ckpt, pairs, capsys):
    """A real read-only output folder. Root ignores permission bits, so as root the run happens
    in a child that has become ``nobody`` (inputs copied where it can read them; the modules it
    needs were imported by the reference run of ``adapt_reference``)."""
    import shutil
    import tempfile

    from dslbench.cli import main

    root = Path(tempfile.mkdtemp(prefix="dslbench-ro-"))
    try:
        root.chmod(0o755)
        base, data = root / "base", root / "pairs.jsonl"
        shutil.copytree(tiny_ckpt, base)
        shutil.copy(pairs, data)
        for p in [base, *base.rglob("*"), data]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        parent = root / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        err_file = root / "err.txt"

        def run():
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            with open(err_file, "w") as f:
                saved, sys.stderr = sys.stderr, f
                try:
                    code = main(_adapt_cli(base, parent / "run", data))
                finally:
                    sys.stderr = saved
            if code != 2:
                raise SystemExit(f"exit code {code}")

        err_file.touch()
        err_file.chmod(0o666)
        assert _in_child(run) == 0, err_file.read_text()
        err = err_file.read_text().strip()
        assert err == f"dslbench adapt: error: {parent / 'run'}: permission denied", err
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_adapt_permission_denied_and_disk_full_are_one_line_errors(tiny_ckpt, pairs, tmp_path, capsys, monkeypatch):
    """The same as above for root (permission bits do not stop root): the operating system's
    errors are injected at the two places they arise."""
    import shutil

    from accelerate import Accelerator

    from dslbench.cli import main

    real_replace = os.replace

    def denied(src, dst):
        if str(dst).endswith("adapt_run.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(fsio.os, "replace", denied)
    assert main(_adapt_cli(tiny_ckpt, tmp_path / "a", pairs)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dslbench adapt: error: {tmp_path / 'a' / 'adapt_run.json'}: permission denied"
    monkeypatch.setattr(fsio.os, "replace", real_replace)

    def full(self, output_dir=None, **kw):  # what torch raises when the disk fills mid-save
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(Accelerator, "save_state", full)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))
    assert main(_adapt_cli(tiny_ckpt, tmp_path / "b", pairs)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("dslbench adapt: error: ") and err.endswith("checkpoints/.tmp-step-00000001: no space left on device")
