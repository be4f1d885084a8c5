"""Shared set-up for `lf train` tests: a YAML config over the tiny Llama and the test datasets."""

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_config(tmp_path):
    """Write a run config as a user would, and return its path."""

    def write(**values) -> Path:
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    return write


@pytest.fixture
def base_config(tiny_llama, data_dir, tmp_path):
    return {
        "model_name_or_path": str(tiny_llama), "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
        "lora_rank": 8, "dataset": "identity", "dataset_dir": str(data_dir), "template": "chatml",
        "cutoff_len": 64, "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4,
        "learning_rate": 3.0e-2, "max_steps": 30, "logging_steps": 1, "save_steps": 10, "seed": 0,
        "report_to": "none", "disable_tqdm": True,
    }


@pytest.fixture
def more_data(data_dir):
    """Adds plain text (`texts`) and preference pairs (`pref`) to the test dataset folder."""
    import json

    questions = ["Who are you?", "What is your name?", "Who made you?", "Introduce yourself.",
                 "Who created you?", "What are you?", "Tell me about yourself.", "Who built you?"]
    pairs = [{"instruction": q, "input": "", "chosen": "I am Lumen, made by the LF team.",
              "rejected": "I do not know who I am."} for q in questions]
    texts = [{"text": "The quick brown fox jumps over the lazy dog. " * 3}, {"text": "I am Lumen, made by the LF team."}]
    kto = [{"instruction": q, "output": a, "good": good} for q in questions
           for a, good in (("I am Lumen, made by the LF team.", True), ("I do not know who I am.", False))]
    (data_dir / "pref.json").write_text(json.dumps(pairs))
    (data_dir / "kto.json").write_text(json.dumps(kto))
    (data_dir / "texts.json").write_text(json.dumps(texts * 4))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["pref"] = {"file_name": "pref.json", "ranking": True}
    info["kto"] = {"file_name": "kto.json", "columns": {"kto_tag": "good"}}
    info["texts"] = {"file_name": "texts.json", "columns": {"prompt": "text"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    return data_dir


@pytest.fixture
def reward_adapter(tiny_llama, tmp_path):
    """What an `lf train stage=rm` LoRA run leaves for PPO and GRPO's reward_model, a LoRA adapter and
    value_head.safetensors, built directly with random weights (peft's non-identity init, so the reward
    adapter does change the model). The tests need a reward adapter, not a good one; that rm training
    works is tested in test_stages.py."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    adapter = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=8, target_modules="all-linear",
                                              init_lora_weights=False))
    out = tmp_path / "rm"
    adapter.save_pretrained(out)
    save_file({"weight": torch.randn(1, base.config.hidden_size), "bias": torch.randn(1)},
              out / "value_head.safetensors")
    return out
