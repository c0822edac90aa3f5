"""The docs' generated reference tables (model args, tasks, metrics) match the code."""

from __future__ import annotations

from pathlib import Path

from dslbench import docs_tables
from dslbench.harness.args import Arg

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))


def test_committed_tables_match_the_code():
    stale = docs_tables.stale_pages(PAGES, write=False)
    assert not stale, f"regenerate with `python -m dslbench.docs_tables --write`: {stale}"


def test_every_backend_and_family_has_its_table():
    """A registered backend or a task folder without its table fails: add the markers
    `<!-- BEGIN GENERATED: KEY -->` / `<!-- END GENERATED -->` to its page and run --write."""
    keys = {m.group("key") for page in PAGES for m in docs_tables.MARKER.finditer(page.read_text())}
    wanted = {"model-args common", *(f"model-args {b}" for b in docs_tables.BACKENDS)}
    wanted |= {f"{kind} {family}" for kind in ("tasks", "metrics") for family in docs_tables.task_families()}
    assert {"model-args mdm_llada", "tasks repair", "metrics open_ended"} <= wanted
    assert wanted <= keys, f"generated tables missing from docs/: {sorted(wanted - keys)}"


def test_a_changed_default_makes_the_check_fail(tmp_path, monkeypatch):
    from dslbench.harness.mdm_backend import MDMLLaDA

    page = tmp_path / "page.md"
    page.write_text("<!-- BEGIN GENERATED: model-args mdm_llada -->\n<!-- END GENERATED -->\n")
    assert docs_tables.main(["--write", str(page)]) == 0
    assert docs_tables.main(["--check", str(page)]) == 0
    monkeypatch.setitem(MDMLLaDA.SAMPLER_ARGS, "nfe", Arg(17, int))
    assert docs_tables.main(["--check", str(page)]) == 1
    assert "| `nfe` | `17` |" not in page.read_text()


def test_a_new_task_makes_the_check_fail(tmp_path, monkeypatch):
    (tmp_path / "repair").mkdir()
    (tmp_path / "repair" / "dsl_repair_new.yaml").write_text("task: dsl_repair_new\n")
    page = tmp_path / "page.md"
    page.write_text("<!-- BEGIN GENERATED: tasks repair -->\n| old |\n<!-- END GENERATED -->\n")
    monkeypatch.setattr(docs_tables, "tasks_dir", lambda: tmp_path)
    assert docs_tables.main(["--check", str(page)]) == 1
    docs_tables.main(["--write", str(page)])
    assert "`dsl_repair_new`" in page.read_text()
