"""Generation metrics: BLEU-4 and ROUGE-1/2/L F1, averaged over examples, in percent.

The numbers follow the conventions users compare against (LLaMA-Factory's SFT predict report):
- BLEU-4 is sentence-level, on *characters* (so Chinese and English are scored alike, with no
  word segmenter), 4-gram equal weights, NIST geometric smoothing (nltk `method3`, the same as
  sacrebleu's `smooth_method="exp"`), x100, averaged over examples. It is not corpus BLEU.
- ROUGE is rouge-score's ROUGE-1/2/L F1 on words; the tokenizer keeps CJK text (rouge-score's own
  drops it) and segments Chinese with jieba. On plain English it gives rouge-score's own tokens.
A prediction or reference with no tokens scores 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

METRIC_NAMES = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
_NOT_WORD = re.compile(r"[\W_]+")  # punctuation, symbols and spaces separate words (as in rouge-score)


@cache
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # "Building prefix dict ..." on first use
    return jieba


def words(text: str) -> list[str]:
    """Lower-cased words of any language: Chinese segmented by jieba, punctuation dropped."""
    cleaned = _NOT_WORD.sub(" ", text.lower()).strip()
    if not cleaned:
        return []
    return [token for token in _jieba().lcut(cleaned) if token.strip()]


class WordTokenizer:
    """rouge-score's tokenizer protocol (`tokenize(text)`) over `words`."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


def sentence_bleu4(prediction: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """Smoothed BLEU-4 of one prediction against one reference, in percent.

    Strings are scored on characters; pass token lists to score other units.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    hypothesis, target = list(prediction), list(reference)
    if not hypothesis or not target:
        return 0.0
    return 100.0 * sentence_bleu([target], hypothesis, weights=(0.25, 0.25, 0.25, 0.25),
                                 smoothing_function=SmoothingFunction().method3)


@cache
def _rouge_scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=WordTokenizer())


def rouge_f1(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 of one prediction against one reference, in percent."""
    scores = _rouge_scorer().score(reference, prediction)  # rouge-score takes (target, prediction)
    return {"rouge-1": 100.0 * scores["rouge1"].fmeasure, "rouge-2": 100.0 * scores["rouge2"].fmeasure,
            "rouge-l": 100.0 * scores["rougeL"].fmeasure}


def example_metrics(prediction: str, reference: str) -> dict[str, float]:
    return {"bleu-4": sentence_bleu4(prediction, reference), **rouge_f1(prediction, reference)}


def compute_generation_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """BLEU-4 and ROUGE-1/2/L F1, each the mean over examples, in percent (rounded to 4 places)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels; they must pair up.")
    if not predictions:
        raise ValueError("no predictions to score.")
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    for prediction, label in zip(predictions, labels, strict=True):
        for name, value in example_metrics(prediction, label).items():
            totals[name] += value
    return {name: round(total / len(predictions), 4) for name, total in totals.items()}
