"""One colour per model on every plot of a report: a single model -> colour map built once from
every measured and published model name, so a reader who learns "orange is LLaDA" on one panel
can trust it on all of them."""

from __future__ import annotations

import re

import pandas as pd

PUBLISHED_MODELS = ("DSL-SDE", "LLaDA", "LLaDA+EOS+Block")
# tab10 first (measured rows, the ones people compare), then tab20's lighter half for the rest
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
            "#dbdb8d", "#9edae5")
LINE_STYLES = ("-", "-.", ":", (0, (5, 1)))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_key(model: str) -> str | None:
    """The published model a measured one is drawn like: the same name up to case and punctuation,
    or ``DSL-SDE`` for any name with both DSL and SDE in it (the DSL-LLaDA SDE sampler rows)."""
    norm = _norm(model)
    for name in PUBLISHED_MODELS:
        if norm == _norm(name):
            return name
    if "dsl" in norm and "sde" in norm:
        return "DSL-SDE"
    return None


def colour_key(model: str) -> str:
    """The name a model's colour is looked up by (measured rows of a published model share its colour)."""
    return published_key(model) or model


def model_colours(cells: pd.DataFrame, published: dict[str, pd.DataFrame] | None = None) -> dict[str, str]:
    """``{colour key: colour}`` for every model of ``cells`` (measured first, sorted) and then every
    published model name; look a model up with :func:`colour_of`."""
    measured = sorted({colour_key(str(m)) for m in cells["model"].unique()}) if "model" in cells else []
    extra = sorted({str(m) for df in (published or {}).values() if "model" in df.columns
                    for m in df["model"].dropna().unique()} - set(measured))
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(measured + extra)}


def colour_of(colours: dict[str, str], model: str) -> str:
    return colours.get(colour_key(model), "#555555")


def line_styles(models: list[str]) -> dict[str, object]:
    """Several measured rows of one colour (one published name): their own line style each."""
    style: dict[str, object] = {}
    for m in models:
        style[m] = LINE_STYLES[sum(colour_key(o) == colour_key(m) for o in style) % len(LINE_STYLES)]
    return style
