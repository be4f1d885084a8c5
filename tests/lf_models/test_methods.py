"""Every tuning method: exactly which parameters train, and a step changes only those."""

import pytest
import torch
from model_helpers import two_steps

from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.loader import load_model, load_tokenizer
from lf_models.precision import choose_precision


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def load(path, **kwargs):
    model_keys = {"quantization_bit", "pure_bf16", "adapter_name_or_path"}
    model_args = ModelArguments(model_name_or_path=str(path), **{k: v for k, v in kwargs.items() if k in model_keys})
    finetuning = FinetuningArguments(**{k: v for k, v in kwargs.items() if k not in model_keys})
    return load_model(model_args, finetuning, choose_precision(), is_trainable=True)


LAYER = "model.layers.{}."
METHODS = {
    "lora": ({}, lambda n: "lora_" in n),
    "rslora": ({"use_rslora": True}, lambda n: "lora_" in n),
    "dora": ({"use_dora": True}, lambda n: "lora_" in n),
    "pissa": ({"pissa_init": True, "pissa_iter": 2}, lambda n: "lora_" in n),
    "freeze_last": ({"finetuning_type": "freeze", "freeze_trainable_layers": 1}, lambda n: ".layers.1." in n),
    "freeze_first": ({"finetuning_type": "freeze", "freeze_trainable_layers": -1}, lambda n: ".layers.0." in n),
    "freeze_modules": ({"finetuning_type": "freeze", "freeze_trainable_layers": 1, "freeze_trainable_modules": ["mlp"],
                        "freeze_extra_modules": ["embed_tokens"]},
                       lambda n: ".layers.1.mlp." in n or "embed_tokens" in n),
    "full": ({"finetuning_type": "full"}, lambda n: True),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_exactly_the_intended_parameters_train(method, tiny_llama):
    kwargs, expected = METHODS[method]
    model = load(tiny_llama, **kwargs)
    names = trainable(model)
    assert names and names == {n for n, _ in model.named_parameters() if expected(n)}
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert two_steps(model) == names


def test_dora_adds_magnitudes_and_rslora_scales_by_sqrt_rank(tiny_llama):
    dora = load(tiny_llama, use_dora=True)
    assert any("lora_magnitude_vector" in n for n in trainable(dora))
    rs = load(tiny_llama, use_rslora=True, lora_rank=4, lora_alpha=8)
    layer = rs.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / 4 ** 0.5)


def test_pissa_starts_from_the_principal_components_and_keeps_the_function(tiny_llama):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    pissa = load(tiny_llama, pissa_init=True, pissa_iter=-1)
    ids = torch.randint(3, 300, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # residual + adapter = the original weight, so the output is unchanged
        torch.testing.assert_close(pissa(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    layer = pissa.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_B["default"].weight.abs().sum() > 0  # unlike plain LoRA, B is not zero


def test_continue_or_stack_adapters(tiny_llama, tmp_path):
    first = load(tiny_llama)
    two_steps(first)
    first.save_pretrained(tmp_path / "a")
    resumed = load(tiny_llama, adapter_name_or_path=[str(tmp_path / "a")])
    saved = {n: p for n, p in first.named_parameters() if "lora_B" in n}
    assert all(torch.equal(p, saved[n]) for n, p in resumed.named_parameters() if n in saved)
    stacked = load(tiny_llama, adapter_name_or_path=[str(tmp_path / "a")], create_new_adapter=True)
    assert all(p.abs().sum() == 0 for n, p in stacked.named_parameters() if "lora_B" in n)  # a fresh adapter


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_adapters_on_a_quantised_model(bits, tiny_llama):
    model = load(tiny_llama, quantization_bit=bits)
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" if bits == 4 else "Linear8bitLt") in kinds
    names = trainable(model)
    assert names == {n for n, _ in model.named_parameters() if "lora_" in n}
    assert two_steps(model) == names


def test_qlora_keeps_training_after_an_evaluation(tiny_llama):
    """bitsandbytes on an AVX512-BF16 CPU would repack 4-bit weights for inference at the first no-grad
    eval forward and train without gradients below them afterwards; LF's training loads never do."""
    model = load(tiny_llama, quantization_bit=4)
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    ids = torch.randint(3, 300, (2, 8), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    model(input_ids=ids, labels=ids).loss.backward()
    first = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight  # under o_proj
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"quantization_bit": 4, "finetuning_type": "full"}, "a quantised model trains only through adapters"),
    ({"quantization_bit": 4, "finetuning_type": "freeze"}, "a quantised model trains only through adapters"),
    ({"quantization_bit": 4, "pissa_init": True}, "pissa_init decomposes full-precision weights"),
    ({"create_new_adapter": True}, "create_new_adapter needs adapter_name_or_path"),
    ({"finetuning_type": "freeze", "freeze_trainable_layers": 5}, "freeze_trainable_layers=5 but the model has 2"),
    ({"finetuning_type": "freeze", "freeze_trainable_modules": ["mlpp"]}, r"freeze_trainable_modules \['mlpp'\]"),
    ({"finetuning_type": "freeze", "freeze_extra_modules": ["embed"]}, "freeze_extra_modules names 'embed'"),
])
def test_impossible_combinations_are_refused(kwargs, message, tiny_llama):
    with pytest.raises(ConfigError, match=message):
        load(tiny_llama, **kwargs)


def test_method_options_need_lora():
    with pytest.raises(ConfigError, match="use_dora needs finetuning_type: lora"):
        FinetuningArguments(finetuning_type="full", use_dora=True)
    with pytest.raises(ConfigError, match="pissa_convert needs pissa_init"):
        FinetuningArguments(pissa_convert=True)


def test_pre_quantised_checkpoints_name_their_backend(tiny_llama, tmp_path):
    import json
    import shutil

    folder = tmp_path / "gptq"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="is quantised with gptq; loading it needs gptqmodel"):
        load(folder)


def test_pure_bf16_keeps_trainable_parameters_in_bf16(tiny_llama):
    model = load(tiny_llama, pure_bf16=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert two_steps(model) == trainable(model)


def test_new_special_tokens_grow_the_embeddings_near_the_mean(tiny_llama):
    model_args = ModelArguments(model_name_or_path=str(tiny_llama), new_special_tokens=["<tool>", "</tool>"])
    tokenizer = load_tokenizer(model_args)
    assert tokenizer.convert_tokens_to_ids("<tool>") == len(tokenizer) - 2
    finetuning = FinetuningArguments()
    model = load_model(model_args, finetuning, choose_precision(), True, tokenizer=tokenizer)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(tokenizer)
    offsets = (weight[-2:] - weight[:-2].mean(dim=0)).norm(dim=1)
    assert torch.all(offsets < 1.6)  # mean row + N(0, 1/d) noise per dimension: about 1 away from the mean
    assert not torch.equal(weight[-1], weight[-2])
    assert {"embed_tokens", "lm_head"} <= set(finetuning.additional_target)
    assert any("embed_tokens" in n for n in trainable(model)) and any("lm_head" in n for n in trainable(model))


def test_value_head_trains_with_the_adapter_and_round_trips(tiny_llama, tmp_path):
    args = ModelArguments(model_name_or_path=str(tiny_llama))
    model = load_model(args, FinetuningArguments(), choose_precision(), True, add_value_head=True)
    assert trainable(model) == {n for n, _ in model.named_parameters() if "lora_" in n or n.startswith("v_head.")}
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # regress the last position's value towards 1.0
        _, values = model(input_ids=ids)
        loss = ((values[:, -1] - 1.0) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    logits, values = model(input_ids=ids)
    assert values.shape == (2, 9) and values.dtype == torch.float32 and logits.shape[:2] == (2, 9)
    model.pretrained_model.save_pretrained(tmp_path)
    model.save_value_head(tmp_path)
    again = load_model(ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(tmp_path)]),
                       FinetuningArguments(), choose_precision(), False, add_value_head=True)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids)[1], model(input_ids=ids)[1], atol=1e-5, rtol=1e-4)


def test_quantised_inference_applies_one_adapter_on_top(tiny_llama, tmp_path):
    from peft import PeftModel

    first = load(tiny_llama)
    two_steps(first)
    first.save_pretrained(tmp_path / "a")
    # 8-bit: bitsandbytes' 4-bit CPU inference kernel needs larger matrices than the tiny model has
    args = ModelArguments(model_name_or_path=str(tiny_llama), quantization_bit=8, adapter_name_or_path=[str(tmp_path / "a")])
    model = load_model(args, FinetuningArguments(), choose_precision(), is_trainable=False)
    assert isinstance(model, PeftModel) and not trainable(model)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[5, 6, 7]])).logits).all()
    args.adapter_name_or_path = [str(tmp_path / "a")] * 2
    with pytest.raises(ConfigError, match="a quantised model takes one adapter at a time"):
        load_model(args, FinetuningArguments(), choose_precision(), is_trainable=False)
