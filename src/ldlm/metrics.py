"""Pure text metrics of a sample set: entropy, distinct-n, repeated n-grams, length.

No model is needed here; the evaluator LM's metrics (gen-PPL, MAUVE) live in `evaluator.py`.
Distinct-n and repetition are computed on lowercased words (so they do not depend on which
tokenizer produced the text); entropy is computed on whatever token ids it is given (the protocol
passes the evaluator LM's tokens, as MDLM/Duo do with GPT-2's).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lowercased words and punctuation marks: 'Hath he?' -> ['hath', 'he', '?']."""
    return _WORD.findall(text.lower())


def ngrams(seq: Sequence, n: int) -> list[tuple]:
    return [tuple(seq[i: i + n]) for i in range(len(seq) - n + 1)]


def unigram_entropy(tokens: Sequence[int]) -> float:
    """Entropy (nats) of the empirical unigram distribution of one sample's tokens; 0 if empty."""
    if not tokens:
        return 0.0
    counts = Counter(tokens)
    total = len(tokens)
    return -sum(c / total * math.log(c / total) for c in counts.values())


def mean_entropy(token_lists: Sequence[Sequence[int]]) -> float:
    """Per-sample unigram entropy averaged over samples (docs/design.md, "Evaluation protocol")."""
    return sum(unigram_entropy(t) for t in token_lists) / max(1, len(token_lists))


def distinct_within(seqs: Sequence[Sequence], n: int) -> float | None:
    """Mean over samples of (unique n-grams / n-grams) in that sample; None if no sample has an n-gram."""
    ratios = [len(set(g)) / len(g) for g in (ngrams(s, n) for s in seqs) if g]
    return sum(ratios) / len(ratios) if ratios else None


def distinct_across(seqs: Sequence[Sequence], n: int) -> float | None:
    """Unique n-grams over the whole set / all n-grams: sees one passage repeated for every sample."""
    all_grams = [g for s in seqs for g in ngrams(s, n)]
    return len(set(all_grams)) / len(all_grams) if all_grams else None


def repeated_ngram_rate(seqs: Sequence[Sequence], n: int = 4) -> float | None:
    """Share of n-gram occurrences that repeat an earlier n-gram of the same sample (pooled)."""
    repeats = total = 0
    for s in seqs:
        g = ngrams(s, n)
        repeats += len(g) - len(set(g))
        total += len(g)
    return repeats / total if total else None


def text_metrics(texts: Sequence[str], rep_n: int = 4) -> dict:
    """Distinct-1/2/3 within samples and across the set, rep-n rate, mean length in words."""
    ws = [words(t) for t in texts]
    out: dict = {"num": len(texts), "empty": sum(1 for w in ws if not w),
                 "mean_words": sum(map(len, ws)) / max(1, len(ws)),
                 "unique_texts": len(set(texts))}
    for n in (1, 2, 3):
        out[f"distinct{n}_within"] = distinct_within(ws, n)
        out[f"distinct{n}_set"] = distinct_across(ws, n)
    out[f"rep{rep_n}"] = repeated_ngram_rate(ws, rep_n)
    return out
