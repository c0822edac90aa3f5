"""The documentation site builds with `mkdocs build --strict` (broken links and anchors fail)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs / mkdocs-material not installed (pip install -e '.[docs]')")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_site_builds_strict(tmp_path):
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "repo" / "tasks" / "repair" / "index.html").is_file()  # linked files come along


def test_a_broken_repository_link_fails_the_build(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    for rel in ("tasks/summarization", "tasks/repair", "tasks/open_ended", "baselines"):
        (project / rel).mkdir(parents=True)
        (project / rel / "README.md").write_text("# x\n")
    page = project / "docs" / "index.md"
    page.write_text(page.read_text() + "\n[gone](../tasks/no_such_family/README.md)\n")
    done = build(project / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no_such_family" in done.stdout + done.stderr
