"""`pip install lf-eval`: BLEU-4 and ROUGE from a predictions file, without the training or UI stack."""

from __future__ import annotations

import json

from alone_helpers import LF_PACKAGES, assert_from_wheel, installed, lf, only_in

pytestmark = only_in("lf-eval")

ROWS = [
    {"prompt": "Who are you?", "predict": "I am Lumen, made by the LF team.", "label": "I am Lumen, made by the LF team."},
    {"prompt": "Capital?", "predict": "The capital of France is Paris.", "label": "Paris is the capital of France."},
    {"prompt": "天气?", "predict": "今天天气很好", "label": "今天天气不错"},
]


def test_lf_eval_alone_brings_no_training_or_ui_stack():
    import lf_eval

    assert_from_wheel(lf_eval)
    have = installed()
    assert {"trl", "deepspeed", "gradio"}.isdisjoint(have)
    assert [name for name in LF_PACKAGES if name in have] == ["lf-data", "lf-models", "lf-serve", "lf-eval"]
    assert lf("version").returncode == 0


def test_scores_bleu_and_rouge_from_a_predictions_file(tmp_path):
    from lf_eval import compute_generation_metrics

    path = tmp_path / "generated_predictions.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS), encoding="utf-8")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    scores = compute_generation_metrics([r["predict"] for r in rows], [r["label"] for r in rows])
    # the numbers the whole workspace gives for the same rows (tests/lf_eval/test_metrics.py checks the method)
    assert scores == {"bleu-4": 77.9457, "rouge-1": 80.0, "rouge-2": 53.3333, "rouge-l": 68.8889}
