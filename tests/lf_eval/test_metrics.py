"""BLEU-4 and ROUGE agree with the reference implementations (sacrebleu, rouge-score) on shared examples."""

from __future__ import annotations

import pytest

from lf_eval.metrics import compute_generation_metrics, rouge_f1, sentence_bleu4, words

ENGLISH = [  # (prediction, reference)
    ("The cat sat on the mat today.", "The cat is sitting on the mat."),
    ("Transformers learn long-range dependencies with attention.",
     "Attention lets transformers learn dependencies across long ranges."),
    ("We propose a new method for low-resource parsing.", "This paper proposes a parsing method for low-resource languages."),
    ("It's 3.5 times faster than the baseline!", "It is 3.5x faster than the baselines."),
    ("no overlap here", "completely different words"),
]
CHINESE = [
    ("我爱北京天安门", "我爱北京"),
    ("今天天气很好，我们去公园散步。", "今天天气不错，我们去公园走走吧。"),
]
TOLERANCE = 1e-6  # percent points; the implementations agree exactly on the same tokens


def sacrebleu_sentence(prediction: str, reference: str, tokenize: str) -> float:
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=tokenize, smooth_method="exp", effective_order=False)
    return bleu.sentence_score(prediction, [reference]).score


@pytest.mark.parametrize(("prediction", "reference"), ENGLISH)
def test_bleu_on_words_equals_sacrebleu_exp_smoothing(prediction, reference):
    ours = sentence_bleu4(prediction.split(), reference.split())
    assert ours == pytest.approx(sacrebleu_sentence(prediction, reference, "none"), abs=TOLERANCE)


@pytest.mark.parametrize(("prediction", "reference"), ENGLISH + CHINESE)
def test_bleu_on_characters_equals_sacrebleu_char(prediction, reference):
    # sacrebleu's char tokenizer drops spaces; LF (like LLaMA-Factory) keeps them as characters.
    # Spelling the space as a visible character makes the two token streams identical.
    def visible(text: str) -> str:
        return text.replace(" ", "\u2581")

    expected = sacrebleu_sentence(visible(prediction), visible(reference), "char")
    assert sentence_bleu4(prediction, reference) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize(("prediction", "reference"), ENGLISH)
def test_rouge_on_english_equals_rouge_score(prediction, reference):
    from rouge_score.rouge_scorer import RougeScorer

    reference_scores = RougeScorer(["rouge1", "rouge2", "rougeL"]).score(reference, prediction)
    ours = rouge_f1(prediction, reference)
    for ours_key, key in (("rouge-1", "rouge1"), ("rouge-2", "rouge2"), ("rouge-l", "rougeL")):
        assert ours[ours_key] == pytest.approx(100 * reference_scores[key].fmeasure, abs=TOLERANCE)


def test_chinese_is_segmented_with_jieba_and_scored():
    from rouge_score.rouge_scorer import RougeScorer

    assert words("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert words("Hello, 世界!") == ["hello", "世界"]
    # 我/爱/北京 against 我/爱/北京/天安门: 3 of 3 unigrams match, 3 of 4 recalled
    scores = rouge_f1("我爱北京", "我爱北京天安门")
    assert scores["rouge-1"] == pytest.approx(100 * 2 * 0.75 / 1.75)
    assert scores["rouge-2"] == pytest.approx(100 * 2 * (2 / 3) / (1 + 2 / 3))
    assert scores["rouge-l"] == pytest.approx(scores["rouge-1"])
    # rouge-score's own tokenizer drops CJK text entirely: that is why LF segments it first
    assert RougeScorer(["rouge1"]).score("我爱北京天安门", "我爱北京")["rouge1"].fmeasure == 0.0


def test_exact_match_scores_100_and_empty_prediction_scores_0():
    text = "The capital of France is Paris."
    assert compute_generation_metrics([text], [text]) == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0,
                                                          "rouge-l": 100.0}
    assert compute_generation_metrics(["今天天气很好"], ["今天天气很好"])["bleu-4"] == 100.0
    assert compute_generation_metrics([""], [text]) == dict.fromkeys(["bleu-4", "rouge-1", "rouge-2", "rouge-l"], 0.0)
    assert compute_generation_metrics(["...!"], [text])["rouge-1"] == 0.0  # punctuation only: no words


def test_scores_are_the_mean_over_examples():
    text = "The capital of France is Paris."
    pairs = ENGLISH[:2]
    mixed = compute_generation_metrics([text, "", *(p for p, _ in pairs)], [text, text, *(r for _, r in pairs)])
    expected_bleu = (100 + 0 + sum(sentence_bleu4(p, r) for p, r in pairs)) / 4
    expected_rouge_l = (100 + 0 + sum(rouge_f1(p, r)["rouge-l"] for p, r in pairs)) / 4
    assert mixed["bleu-4"] == pytest.approx(expected_bleu, abs=1e-4)
    assert mixed["rouge-l"] == pytest.approx(expected_rouge_l, abs=1e-4)


def test_sentence_bleu_is_not_corpus_bleu():
    """Documented difference: LF averages sentence BLEU; sacrebleu's corpus BLEU pools n-gram counts."""
    from sacrebleu.metrics import BLEU

    predictions, references = zip(*ENGLISH, strict=True)
    ours = compute_generation_metrics(list(predictions), list(references))["bleu-4"]
    corpus = BLEU(tokenize="char", smooth_method="exp").corpus_score(list(predictions), [list(references)]).score
    assert abs(ours - corpus) > 1.0  # not interchangeable: compare BLEU numbers only between LF runs


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        compute_generation_metrics(["a", "b"], ["a"])
