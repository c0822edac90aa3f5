"""Test helpers that watch a training module from the inside."""

from __future__ import annotations


def capture_logits(module) -> dict:
    """Wrap ``module.logits`` so that every call's output is kept as ``captured["logits"]``."""
    captured: dict = {}
    original = module.logits

    def spy(**kw):
        captured["logits"] = original(**kw)
        return captured["logits"]

    module.logits = spy
    return captured
