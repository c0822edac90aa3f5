"""Newsroom extractive fragment coverage, density and compression (Grusky et al., 2018).

Tokens are ``text.fragment_tokens`` (lower-cased words and punctuation).  With A the
source (article) tokens and S the summary tokens, the extractive fragments F(A, S)
are found greedily, left to right over S:

* at summary position i, scan the whole article for every position j where
  ``A[j] == S[i]``, extend each such match as far as both sequences agree, keep the
  longest one (the first of equal length), and continue the article scan after the
  end of the match just extended;
* if a match was found, it is a fragment and i advances by its length, otherwise i
  advances by one (S[i] is a novel token).

Then, with |f| a fragment's length::

    coverage    = sum |f|   / |S|   share of summary tokens inside some fragment
    density     = sum |f|^2 / |S|   average length of the fragment each token is in
    compression = |A| / |S|

Empty summary (|S| = 0): the three statistics do not exist and are ``None``; the task
averages them over the non-empty outputs only and reports the count of empty outputs
beside them (``n_empty``), so nothing is filled in for an output that does not exist.

The source A is the source the model saw: when the backend cut an over-long prompt, the
per-sample record names the characters it dropped, and :func:`source_seen` removes them.
"""

from __future__ import annotations

from dslbench.metrics.text import fragment_tokens


def extractive_fragments(article: list[str], summary: list[str]) -> list[list[str]]:
    """The greedy extractive fragments F(A, S), in summary order.

    Same result as scanning every article position; only the positions holding the
    token S[i] are visited (a position index), which keeps long sources fast.
    """
    where: dict[str, list[int]] = {}
    for j, tok in enumerate(article):
        where.setdefault(tok, []).append(j)
    fragments: list[list[str]] = []
    i = 0
    while i < len(summary):
        best = 0
        resume = 0  # the article scan continues after the end of the last match
        for j in where.get(summary[i], ()):
            if j < resume:
                continue
            k = 0
            while i + k < len(summary) and j + k < len(article) and summary[i + k] == article[j + k]:
                k += 1
            if k > best:
                best = k
            resume = j + k
        if best:
            fragments.append(summary[i : i + best])
        i += max(best, 1)
    return fragments


def fragment_stats(article: list[str], summary: list[str]) -> dict[str, float | None]:
    n = len(summary)
    if n == 0:
        return {"coverage": None, "density": None, "compression": None}
    frags = extractive_fragments(article, summary)
    return {
        "coverage": sum(len(f) for f in frags) / n,
        "density": sum(len(f) ** 2 for f in frags) / n,
        "compression": len(article) / n,
    }


def newsroom(summary: str, source: str) -> dict[str, float | None]:
    """Coverage, density and compression of ``summary`` against ``source`` (see module doc)."""
    return fragment_stats(fragment_tokens(source), fragment_tokens(summary))


def source_seen(document: str, dropped: str) -> str:
    """``document`` without the text a prompt cut dropped (``dropped``: exact characters of
    the prompt, from the per-sample record). The cut drops the end of the document, so the
    last occurrence is removed; a cut that ran past the document's end (into a chat template's
    closing text) removes the document's overlapping end. Anything else is an error, not a guess."""
    if not dropped:
        return document
    at = document.rfind(dropped)
    if at >= 0:
        return document[:at] + document[at + len(dropped):]
    for k in range(min(len(document), len(dropped)), 0, -1):
        if document.endswith(dropped[:k]):
            return document[:-k]
    if document in dropped:
        return ""
    raise ValueError(
        "source_seen: the text the backend dropped from the prompt is not part of the source document; "
        "cannot tell which part of the source the model saw"
    )
