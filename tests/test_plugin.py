"""The lm-eval plugin wiring, checked in fresh interpreters as a user would meet it."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_py(code: str, python: str = sys.executable, cwd: Path | None = None, timeout: int = 300,
           env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [python, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
        cwd=cwd or Path("/"), env={**(os.environ if env is None else env), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_startup_installs_only_the_hook():
    out = json.loads(run_py("""
        import json, sys
        print(json.dumps({m: m in sys.modules for m in ("dslbench._lm_eval_hook", "torch", "lm_eval", "transformers")}))
    """))
    assert out == {"dslbench._lm_eval_hook": True, "torch": False, "lm_eval": False, "transformers": False}, (
        "the dslbench_lm_eval.pth hook must be active after install and import nothing heavy"
    )


def test_plain_lm_eval_finds_backends_and_tasks(tmp_path):
    user_tasks = tmp_path / "user_tasks"
    user_tasks.mkdir()
    (user_tasks / "my_task.yaml").write_text(
        "task: my_user_task\ndataset_path: json\noutput_type: generate_until\n"
        "doc_to_text: x\ndoc_to_target: y\ntest_split: test\n"
    )
    out = json.loads(run_py(f"""
        import json
        from lm_eval.api.registry import get_model
        from lm_eval.tasks import TaskManager
        mdm = get_model("mdm_llada")
        hf = get_model("hf")  # lm-eval's own backends are still registered
        tm = TaskManager(include_path={str(user_tasks)!r})
        plain = TaskManager(include_defaults=False)
        print(json.dumps({{
            "mdm": mdm.__module__ + ":" + mdm.__name__,
            "hf": hf.__name__,
            "synth16": "dsl_summ_synth_16step" in tm.all_tasks,
            "user": "my_user_task" in tm.all_tasks,
            "builtin": "gsm8k" in tm.all_tasks,
            "no_defaults": "dsl_summ_synth_16step" in plain.all_tasks,
        }}))
    """))
    assert out == {
        "mdm": "dslbench.harness.mdm_backend:MDMLLaDA",
        "hf": "HFLM",
        "synth16": True,
        "user": True,
        "builtin": True,
        # include_defaults=False asks for no default tasks: ours are defaults too
        "no_defaults": False,
    }


def test_hook_is_idempotent_and_does_not_double_wrap():
    out = run_py("""
        import dslbench._lm_eval_hook as hook
        from lm_eval.tasks import manager
        hook.install(); hook.install()
        import sys
        finders = [f for f in sys.meta_path if type(f).__name__ == "_Finder"]
        print(len(finders), manager.TaskManager.__init__._dslbench_wrapped)
    """)
    assert out == "1 True"


def _isolated_env() -> dict[str, str]:
    """The environment for the inner venv's interpreter and pip: nothing that points them elsewhere.

    PYTHONPATH / PYTHONHOME / PYTHONUSERBASE would put the checkout (or another install) in front of
    the wheel under test; PIP_USER / PIP_TARGET / PIP_PREFIX would install it somewhere else.
    """
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _check(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{cmd}: " + (proc.stdout + proc.stderr)[-3000:]


def _outer_site_dirs() -> list[str]:
    """Where the running interpreter finds its installed packages, wherever they are.

    A global Python, a venv (with or without system site-packages), a conda env and ``pip install
    --user`` all differ here; asking ``site`` covers them all without assuming any of them.
    """
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


@pytest.mark.slow
def test_wheel_ships_tasks_and_hook_and_uninstall_removes_them(tmp_path):
    wheel_dir = tmp_path / "wheels"
    # --no-cache-dir everywhere: nothing written outside tmp_path (a read-only home stays untouched)
    _check([sys.executable, "-m", "pip", "--no-cache-dir", "wheel", "--no-deps", "--no-build-isolation", "-q",
            "-w", str(wheel_dir), str(ROOT)], {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (wheel,) = wheel_dir.glob("dslbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "dslbench_lm_eval.pth" in names
    shipped = {n.split("/")[-1] for n in names if n.startswith("dslbench/_tasks/")}
    in_repo = {p.name for p in (ROOT / "tasks").rglob("*") if p.is_file() and p.suffix in (".yaml", ".py")}
    assert in_repo and in_repo <= shipped

    # A plain (non-editable) install in a fresh, isolated venv: the wheel is the only dslbench it
    # can see. The dependencies (lm_eval, torch, ...) come from the running interpreter's own
    # package folders, listed in a .pth file *after* the install: a plain path line adds the folder
    # but runs none of its .pth files, so the outer environment's dslbench (an editable install's
    # path hook, or its lm-eval hook) never reaches the inner interpreter.
    venv = tmp_path / "venv"
    env = _isolated_env()
    _check([sys.executable, "-m", "venv", str(venv)], env)
    py = str(venv / "bin" / "python")
    site_dir = Path(run_py("import sysconfig; print(sysconfig.get_paths()['purelib'])", python=py, env=env))
    pip = [py, "-m", "pip", "--no-cache-dir"]
    _check([*pip, "install", "--no-deps", "-q", str(wheel)], env)
    assert (site_dir / "dslbench_lm_eval.pth").exists()
    outer = site_dir / "_outer_site_packages.pth"
    outer.write_text("".join(f"{d}\n" for d in _outer_site_dirs()))

    out = json.loads(run_py("""
        import json, sys, dslbench.paths
        from lm_eval.tasks import TaskManager
        tm = TaskManager()
        print(json.dumps({
            "dir": str(dslbench.paths.tasks_dir()),
            "hook": "dslbench._lm_eval_hook" in sys.modules,
            "ok": "dsl_summ_synth_16step" in tm.all_tasks,
        }))
    """, python=py, env=env))
    assert out["hook"], "the wheel's .pth did not install the lm-eval hook at start-up"
    assert out["ok"] and Path(out["dir"]) == (site_dir / "dslbench" / "_tasks").resolve(), out

    outer.unlink()  # uninstall sees the inner venv only
    _check([*pip, "uninstall", "-y", "-q", "dslbench"], env)
    assert not (site_dir / "dslbench_lm_eval.pth").exists()
    assert not (site_dir / "dslbench").exists()
