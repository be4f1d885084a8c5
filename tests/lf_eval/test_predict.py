"""`lf eval task=predict`: generate for every dataset row through lf-serve, write and score the answers."""

from __future__ import annotations

import json

import pytest
import yaml

from lf_data.cli import main as lf_main
from lf_data.errors import ConfigError
from lf_eval.metrics import compute_generation_metrics
from lf_eval.predict import PREDICT_RESULTS_FILE, PREDICTIONS_FILE, generate_answers, save_predictions
from lf_eval.run import run_eval

ANSWER = "I am Lumen, made by the LF team."  # every row of the identity dataset (tests/conftest.py)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_save_predictions_writes_both_files_and_scores(tmp_path):
    results = save_predictions(tmp_path / "out", ["p1", "p2"], [ANSWER, "I am a model."], [ANSWER, ANSWER],
                               {"predict_runtime": 1.5})
    rows = read_jsonl(tmp_path / "out" / PREDICTIONS_FILE)
    assert rows == [{"prompt": "p1", "predict": ANSWER, "label": ANSWER},
                    {"prompt": "p2", "predict": "I am a model.", "label": ANSWER}]
    metrics = compute_generation_metrics([ANSWER, "I am a model."], [ANSWER, ANSWER])
    assert results == {f"predict_{k}": v for k, v in metrics.items()} | {"predict_samples": 2, "predict_runtime": 1.5}
    assert json.loads((tmp_path / "out" / PREDICT_RESULTS_FILE).read_text()) == results
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temporary files


class EchoEngine:
    """Answers each conversation with its last message, recording the batches it was handed."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def batch_chat(self, conversations):
        from types import SimpleNamespace

        self.batches.append(len(conversations))
        return [SimpleNamespace(text=c[-1]["content"]) for c in conversations]


@pytest.mark.parametrize("verbosity", ["info", "quiet"])
def test_answers_come_in_order_with_a_progress_bar_unless_quiet(verbosity, monkeypatch, capsys):
    monkeypatch.setenv("LF_VERBOSITY", verbosity)
    engine = EchoEngine()
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(7)]
    assert generate_answers(engine, conversations, 3) == [f"q{i}" for i in range(7)]
    assert engine.batches == [3, 3, 1]
    err = capsys.readouterr().err
    assert ("predict: 100%" in err and "7/7" in err) == (verbosity == "info"), err


def test_fine_tuning_lifts_the_scores_from_noise_to_exact(tiny_llama, data_dir, tmp_path, capsys):
    """The path a user takes: lf eval (base), lf train (LoRA), lf eval with the adapter."""
    predict = {"model_name_or_path": str(tiny_llama), "template": "chatml", "task": "predict", "dataset": "identity",
               "dataset_dir": str(data_dir), "max_new_tokens": 24, "batch_size": 3}
    base_yaml = tmp_path / "predict.yaml"
    base_yaml.write_text(yaml.safe_dump({**predict, "save_dir": str(tmp_path / "base")}))
    assert lf_main(["eval", str(base_yaml)]) == 0
    assert "predict: 100%" in capsys.readouterr().err  # a progress bar over the rows
    base = json.loads((tmp_path / "base" / PREDICT_RESULTS_FILE).read_text())
    rows = read_jsonl(tmp_path / "base" / PREDICTIONS_FILE)
    assert len(rows) == 8 == base["predict_samples"]
    assert rows[0]["prompt"] == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert rows[1]["prompt"] == "<|im_start|>user\nWhat is your name?<|im_end|>\n<|im_start|>assistant\n"
    assert all(r["label"] == ANSWER for r in rows)
    recomputed = compute_generation_metrics([r["predict"] for r in rows], [r["label"] for r in rows])
    assert base["predict_bleu-4"] == recomputed["bleu-4"] and base["predict_rouge-l"] == recomputed["rouge-l"]
    assert base["predict_bleu-4"] < 20 and base["predict_rouge-1"] < 20  # a random model answers noise

    # greedy by default: the same config predicts the same answers again
    assert lf_main(["eval", str(base_yaml), f"save_dir={tmp_path / 'again'}"]) == 0
    assert read_jsonl(tmp_path / "again" / PREDICTIONS_FILE) == rows

    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_llama), "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
        "dataset": "identity", "dataset_dir": str(data_dir), "template": "chatml", "cutoff_len": 64,
        "output_dir": str(tmp_path / "adapter"), "per_device_train_batch_size": 4, "learning_rate": 3.0e-2,
        "max_steps": 30, "logging_steps": 10, "seed": 0, "disable_tqdm": True}))
    assert lf_main(["train", str(train_yaml)]) == 0
    capsys.readouterr()
    assert lf_main(["eval", str(base_yaml), f"save_dir={tmp_path / 'tuned'}",
                    f"adapter_name_or_path={tmp_path / 'adapter'}"]) == 0
    tuned = json.loads((tmp_path / "tuned" / PREDICT_RESULTS_FILE).read_text())
    assert {k: tuned[f"predict_{k}"] for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")} == dict.fromkeys(
        ("bleu-4", "rouge-1", "rouge-2", "rouge-l"), 100.0)
    assert [r["predict"] for r in read_jsonl(tmp_path / "tuned" / PREDICTIONS_FILE)] == [ANSWER] * 8
    assert "predict_rouge-l" in capsys.readouterr().out


def test_predict_config_errors(tiny_llama, data_dir, tmp_path):
    base = {"model_name_or_path": str(tiny_llama), "task": "predict", "dataset_dir": str(data_dir)}
    with pytest.raises(ConfigError, match="task: predict needs `save_dir`"):
        run_eval({**base, "dataset": "identity"})
    with pytest.raises(ConfigError, match="task: predict needs `dataset`"):
        run_eval({**base, "save_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="unknown config key 'max_new_token'. Did you mean 'max_new_tokens'"):
        run_eval({**base, "dataset": "identity", "save_dir": str(tmp_path / "out"), "max_new_token": 5})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / PREDICTIONS_FILE).write_text("{}\n")
    with pytest.raises(ConfigError, match="already holds generated_predictions.jsonl"):
        run_eval({**base, "dataset": "identity", "save_dir": str(tmp_path / "out")})
