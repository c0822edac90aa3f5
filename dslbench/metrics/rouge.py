"""ROUGE-1/2/L F1 x 100 with rouge-score's Porter stemmer (the published setting).

Tokenizers (``tokenizer=``):

``default``
    rouge-score's own: lower-case, every character outside ``[a-z0-9]`` becomes a space, Porter
    stemmer on words longer than 3 characters. The published scores used it, so it stays the
    default; but text in another script (Cyrillic, Greek, CJK, emoji) tokenizes to nothing and
    scores 0 even when identical to its reference. :func:`rouge_tokens` shows what it keeps.
``unicode``
    dslbench's own, for non-English data (task metadata ``rouge_tokenizer: unicode``):
    lower-case; tokens are runs of Unicode letters and digits, every CJK ideograph or kana
    character on its own (those scripts do not separate words by spaces), and every symbol
    character (emoji, currency, maths: Unicode category S*) on its own; punctuation is dropped.
    Tokens made only of ``[a-z0-9]`` get the Porter stemmer as in ``default`` (longer than 3
    characters). Not comparable with published figures.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ROUGE_TOKENIZERS = ("default", "unicode")

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_UNICODE_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]")
_ASCII_WORD = re.compile(r"^[a-z0-9]+$")


class UnicodeTokenizer:
    """The ``unicode`` tokenizer (module docstring), with rouge-score's ``tokenize`` interface."""

    def __init__(self, use_stemmer: bool = True) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = []
        for tok in _UNICODE_TOKEN.findall(text.lower()):
            if len(tok) == 1 and not tok.isalnum() and not unicodedata.category(tok).startswith("S"):
                continue  # punctuation, marks, joiners
            if self._stemmer is not None and len(tok) > 3 and _ASCII_WORD.match(tok):
                tok = self._stemmer.stem(tok)
            tokens.append(tok)
        return tokens


def _check(tokenizer: str) -> None:
    if tokenizer not in ROUGE_TOKENIZERS:
        raise ValueError(f"rouge tokenizer {tokenizer!r}; allowed: {', '.join(ROUGE_TOKENIZERS)}")


@lru_cache(maxsize=None)
def _scorer(tokenizer: str = "default"):
    _check(tokenizer)
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:  # never score 0 silently for a missing dependency
        raise ImportError("ROUGE needs the rouge-score package: pip install rouge-score") from e
    custom = UnicodeTokenizer() if tokenizer == "unicode" else None
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=custom)


def rouge_tokens(text: str, tokenizer: str = "default") -> list[str]:
    """The tokens ROUGE compares for ``text`` under ``tokenizer``."""
    return _scorer(tokenizer)._tokenizer.tokenize(text)


def rouge(prediction: str, reference: str, tokenizer: str = "default") -> dict[str, float]:
    """F1 x 100 per ROUGE type; an empty prediction scores 0 (it is scored, not dropped)."""
    scorer = _scorer(tokenizer)  # still fail loudly when rouge-score is missing
    if not prediction.strip():
        return {k: 0.0 for k in ROUGE_TYPES}
    scores = scorer.score(reference, prediction)
    return {k: 100.0 * scores[k].fmeasure for k in ROUGE_TYPES}
