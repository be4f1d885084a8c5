"""The example recipes in examples/eval run on the real SmolLM2 exactly as a user starts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lf_data.cli import main as lf

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes name data/ relative to the repository


def test_mmlu_example_on_the_fixture_task(tmp_path, capsys):
    task = ["task_dir=tests/fixtures/eval", "subjects=abstract_algebra,philosophy,sociology,virology", "n_shot=1"]
    assert lf(["eval", "examples/eval/mmlu.yaml", *task, f"save_dir={tmp_path}", "--check"]) == 0
    out = capsys.readouterr().out  # every question read, nothing loaded or written
    assert "examples/eval/mmlu.yaml is valid." in out and "4 subjects, 14 questions, 1-shot" in out
    assert not (tmp_path / "results.json").exists()
    assert lf(["eval", "examples/eval/mmlu.yaml", *task, f"save_dir={tmp_path}", "batch_size=4"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["questions"] == 14 and results["template"] == "smollm2" and results["n_shot"] == 1
    answers = {s: [line.rsplit(",", 1)[1] for line in
                   (REPO / f"tests/fixtures/eval/mmlu/data/test/{s}_test.csv").read_text().splitlines()]
               for s in results["predictions"]}
    for subject, predictions in results["predictions"].items():
        assert set(predictions) <= set("ABCD")
        correct = sum(p == a for p, a in zip(predictions, answers[subject], strict=True))
        assert results["subjects"][subject]["correct"] == correct
    assert results["average"] == pytest.approx(100 * results["correct"] / 14, abs=1e-3)


def test_predict_example(tmp_path):
    out = tmp_path / "predict"
    assert lf(["eval", "examples/eval/predict.yaml", f"save_dir={out}", "max_samples=2", "max_new_tokens=16"]) == 0
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["predict"] and r["label"] for r in rows)
    assert rows[0]["prompt"].startswith("<|im_start|>")
    results = json.loads((out / "predict_results.json").read_text())
    assert results["predict_samples"] == 2 and 0 <= results["predict_rouge-l"] <= 100
