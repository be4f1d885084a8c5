"""Stage pt reports perplexity = exp(eval_loss) with every evaluation, as LlamaFactory's pt workflow does."""

import json
import math
from pathlib import Path

from train_helpers import log_records

from lf_data.cli import main as lf
from lf_train.stages.sft import perplexity


def test_pt_evaluation_reports_the_exponential_of_the_eval_loss(base_config, write_config, more_data):
    base_config.update(stage="pt", dataset="texts", eval_dataset="texts", cutoff_len=16, max_steps=2,
                       eval_on_start=True, save_steps=1000)
    assert lf(["train", str(write_config(**base_config))]) == 0
    out = Path(base_config["output_dir"])
    final = json.loads((out / "eval_results.json").read_text())
    assert final["eval_perplexity"] == math.exp(final["eval_loss"])
    evaluations = [r for r in log_records(out) if "eval_loss" in r]
    assert [r["step"] for r in evaluations] == [0, 2]  # eval_on_start: the model before training, then after
    for record in evaluations:
        assert record["eval_perplexity"] == math.exp(record["eval_loss"])
    assert evaluations[1]["eval_perplexity"] < evaluations[0]["eval_perplexity"]


def test_a_diverged_loss_gives_infinite_perplexity_not_an_error():
    assert perplexity(1e4) == math.inf
    assert perplexity(0.0) == 1.0
