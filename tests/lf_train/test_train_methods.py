"""Tuning methods through `lf train`, the way a user runs them."""

import json
from pathlib import Path

import pytest
import torch

from lf_data.cli import main as lf
from lf_train.optimizers import loraplus_optimizer


def losses(output_dir) -> list[float]:
    lines = (Path(output_dir) / "trainer_log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tiny_llama):
    from transformers import TrainingArguments

    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model
    from lf_models.precision import choose_precision

    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(), choose_precision(), True)
    optimizer = loraplus_optimizer(model, TrainingArguments(output_dir="unused", learning_rate=1e-3), ratio=16)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert lr_of[id(param)] == pytest.approx(1.6e-2 if "lora_B" in name else 1e-3), name


@pytest.mark.parametrize("method", [
    {"loraplus_lr_ratio": 4, "learning_rate": 1.0e-2},
    {"use_dora": True},
    {"quantization_bit": 4},
])
def test_methods_train_through_lf_train(method, base_config, write_config, tmp_path):
    base_config.update(max_steps=12, **method)
    assert lf(["train", str(write_config(**base_config))]) == 0
    seen = losses(base_config["output_dir"])
    assert sum(seen[-3:]) / 3 < 0.6 * sum(seen[:3]) / 3, seen


def test_gradient_checkpointing_gives_the_same_losses(base_config, write_config, tmp_path):
    base_config.update(max_steps=4)
    plain = tmp_path / "plain"
    assert lf(["train", str(write_config(**base_config)), f"output_dir={plain}"]) == 0
    checkpointed = tmp_path / "checkpointed"
    assert lf(["train", str(write_config(**base_config)), f"output_dir={checkpointed}",
               "gradient_checkpointing=true"]) == 0
    assert losses(checkpointed) == pytest.approx(losses(plain), rel=1e-4)


def test_freeze_tuning_saves_a_full_model_with_only_the_last_layer_changed(base_config, write_config, tiny_llama):
    from transformers import AutoModelForCausalLM

    base_config.update(finetuning_type="freeze", freeze_trainable_layers=1, max_steps=3, learning_rate=1e-3)
    assert lf(["train", str(write_config(**base_config))]) == 0
    tuned = AutoModelForCausalLM.from_pretrained(base_config["output_dir"]).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    changed = {n for n in base if not torch.equal(base[n], tuned[n])}
    assert changed and all(".layers.1." in n for n in changed)


def test_pissa_convert_saves_an_adapter_for_the_original_base(base_config, write_config, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model
    from lf_models.precision import choose_precision

    base_config.update(pissa_init=True, pissa_iter=-1, pissa_convert=True, max_steps=3, learning_rate=1e-2,
                       save_steps=3)
    assert lf(["train", str(write_config(**base_config))]) == 0
    out = Path(base_config["output_dir"])
    # the trained model as training saw it: PiSSA's residual base plus the PiSSA-form adapter
    trained = load_model(ModelArguments(model_name_or_path=str(tiny_llama),
                                        adapter_name_or_path=[str(out / "checkpoint-3")]),
                         FinetuningArguments(), choose_precision(), is_trainable=True)
    converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)  # plain peft
    ids = torch.randint(3, 300, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        torch.testing.assert_close(converted(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-3)
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama)(input_ids=ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter did change the model
