"""Declared model arguments of the dslbench backends: parsing, defaults, clear errors.

Every value, from ``--model_args`` or from a task's generation kwargs, goes through
:func:`convert`: type, choices and the declared :class:`Range` (NaN is never a valid number, nor
is +-inf unless the spec says ``allow_inf``; a count is at most its ``ceiling``), so a value
outside what the sampler means is refused by name instead of silently falling back.
:func:`check_context` bounds the token counts by the model's context once it is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """Allowed numeric interval; ``None`` = unbounded on that side, ``*_open`` = bound excluded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "any number"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
UNIT = Range(0, 1)

# The largest count (tokens, forward passes, batch rows...) any int model arg may take: far above
# every real context and budget, low enough that a typo (an extra zero or three) is refused.
MAX_COUNT = 1 << 20


@dataclass(frozen=True)
class Arg:
    default: Any
    kind: type | None = None  # int, float, bool, str; None = any
    choices: tuple | None = None
    help: str = ""
    valid: Range | None = None  # allowed values of a number (None, the "use the default" value, always passes)
    ceiling: int | None = MAX_COUNT  # an int's largest value (None: unbounded, e.g. a seed)
    allow_inf: bool = False  # a float may be +-inf (no declared arg allows it)


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"model arg {name}={value!r}: expected true or false")


def convert(name: str, spec: Arg, value: Any) -> Any:
    if value is None:
        return None
    if spec.kind is bool:
        value = _to_bool(name, value)
    try:
        if spec.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(value)
        elif spec.kind is float:
            value = float(value)
        elif spec.kind is str:
            value = str(value)
    except (TypeError, ValueError):
        raise ValueError(f"model arg {name}={value!r}: expected {'an' if spec.kind is int else 'a'} {spec.kind.__name__}") from None
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ValueError(f"model arg {name}={value!r} is not allowed; choose one of: {allowed}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"model arg {name}={value!r} is not a number; allowed: {spec.valid or 'a finite number'}")
    if isinstance(value, float) and math.isinf(value) and not spec.allow_inf:
        raise ValueError(f"model arg {name}={value!r} is not finite; allowed: a finite number"
                         + (f" {spec.valid}" if spec.valid is not None else ""))
    if (spec.kind is int and spec.ceiling is not None and isinstance(value, int) and not isinstance(value, bool)
            and value > spec.ceiling):
        raise ValueError(f"model arg {name}={value!r} is too large; allowed: at most {spec.ceiling}")
    if spec.valid is not None and value not in spec.valid:
        raise ValueError(f"model arg {name}={value!r} is out of range; allowed: {spec.valid}")
    return value


def parse_args(backend: str, specs: dict[str, Arg], given: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and convert types; unknown names are an error listing the valid ones."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        valid = ", ".join(sorted(specs))
        raise ValueError(f"{backend}: unknown model arg(s) {', '.join(unknown)}. Valid model args: {valid}")
    out = {}
    for name, spec in specs.items():
        out[name] = convert(name, spec, given[name]) if name in given else spec.default
    return out



# model args counted in tokens of one sequence, which must fit the model's context
CONTEXT_ARGS = ("gen_length", "block_length")


def model_context(config: Any) -> tuple[int, str] | None:
    """``(tokens, field)`` of a model's context from its config (an object or config.json's
    dict): ``max_sequence_length`` (LLaDA), ``max_position_embeddings`` (Dream), or either
    inside ``text_config`` (DiffusionGemma); None when the config names none."""
    def get(obj: Any, key: str) -> Any:
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    for prefix, obj in (("", config), ("text_config.", get(config, "text_config"))):
        if obj is None:
            continue
        for key in ("max_sequence_length", "max_position_embeddings"):
            value = get(obj, key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, prefix + key
    return None


def check_context(backend: str, args: dict[str, Any], context: int, where: str) -> None:
    """Refuse token counts the model's context cannot hold: ``max_length`` above ``context``
    (``where`` names it, e.g. ``max_sequence_length=4096 of DIR/config.json``), and a
    ``gen_length`` / ``block_length`` that leaves no room for a prompt within ``max_length``."""
    max_length = args.get("max_length")
    if max_length is not None and max_length > context:
        raise ValueError(f"{backend}: model arg max_length={max_length} exceeds the model's context ({where})")
    limit = max_length or context
    named = f"max_length={max_length}" if max_length else f"the model's context ({where})"
    for name in CONTEXT_ARGS:
        value = args.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= limit:
            raise ValueError(f"{backend}: model arg {name}={value} leaves no room for a prompt within {named}; "
                             f"allowed: below {limit}")
