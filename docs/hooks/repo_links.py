"""mkdocs hook: the pages link files next to docs/ (tasks/*/README.md, baselines/README.md,
results/report.png) as `../PATH`, which works on GitHub. For the site, those files are copied in
under `repo/` and the links rewritten to match; a link to a repository file that does not exist
stays as it is, so `mkdocs build --strict` fails on it. `results/report.png` is generated
(`dslbench report`), so where it is absent its image is replaced by a note instead."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.repo_links")
FIXED = ("baselines/README.md", "results/report.png")  # plus every tasks/<family>/README.md
OPTIONAL = {"results/report.png"}
LINK = re.compile(r"(!?)\[([^\]]*)\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")


def _root(config) -> Path:
    return Path(config["config_file_path"]).parent


def _shared(config) -> tuple[str, ...]:
    root = _root(config)
    return tuple(sorted(p.relative_to(root).as_posix() for p in root.glob("tasks/*/README.md"))) + FIXED


def on_files(files, config):
    for rel in _shared(config):
        path = _root(config) / rel
        if path.is_file():
            files.append(File(f"repo/{rel}", src_dir=str(_root(config)), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
            files.get_file_from_path(f"repo/{rel}").abs_src_path = str(path)
    return files


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")

    def rewrite(match):
        image, text, rel, anchor = match.group(1), match.group(2), match.group(3), match.group(4) or ""
        if rel in OPTIONAL and not (_root(config) / rel).is_file():
            log.info("%s: %s not generated yet, shown as a note", page.file.src_uri, rel)
            return f"*({text}: `{rel}`, written by `dslbench report`, not generated in this checkout)*"
        if rel not in _shared(config):
            return match.group(0)
        return f"{image}[{text}]({'../' * depth}repo/{rel}{anchor})"

    return LINK.sub(rewrite, markdown)
