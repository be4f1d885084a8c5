"""Stages other than sft, through `lf train`."""

import json
from pathlib import Path

import torch

from lf_data.cli import main as lf


def losses(output_dir) -> list[float]:
    lines = (Path(output_dir) / "trainer_log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_pretraining_on_packed_text(base_config, write_config, more_data):
    base_config.update(stage="pt", dataset="texts", cutoff_len=16, max_steps=15)
    assert lf(["train", str(write_config(**base_config))]) == 0
    seen = losses(base_config["output_dir"])
    assert sum(seen[-3:]) / 3 < 0.6 * sum(seen[:3]) / 3, seen  # fixed seed: 5.8 -> 3.0


def test_reward_model_learns_to_prefer_the_chosen_answer(base_config, write_config, more_data, tiny_llama):
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model, load_tokenizer
    from lf_models.precision import choose_precision
    from lf_train.collators import PairwiseCollator
    from lf_train.stages.rm import last_token_values

    base_config.update(stage="rm", dataset="pref", max_steps=20, learning_rate=1e-2, val_size=2)
    assert lf(["train", str(write_config(**base_config))]) == 0
    out = Path(base_config["output_dir"])
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] == 1.0
    seen = losses(out)
    assert seen[-1] < 0.1 < seen[0], seen  # -log sigmoid(margin): from ~0.69 towards 0

    # the saved adapter + value head, loaded again, score chosen above rejected on every pair
    model_args = ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(out)])
    model = load_model(model_args, FinetuningArguments(), choose_precision(), False, add_value_head=True)
    tokenizer = load_tokenizer(model_args)
    data = build_dataset(DataArguments(dataset=["pref"], dataset_dir=str(more_data), template="chatml"),
                         tokenizer, "rm").train_dataset
    batch = PairwiseCollator(tokenizer.pad_token_id)(list(data))
    with torch.no_grad():
        rewards = last_token_values(model(batch["input_ids"], batch["attention_mask"])[1], batch["attention_mask"])
    chosen, rejected = rewards.chunk(2)
    assert torch.all(chosen > rejected)
