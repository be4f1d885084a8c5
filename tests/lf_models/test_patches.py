import pytest
import torch

from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.loader import load_model
from lf_models.patches import upcast_layernorm, upcast_lmhead_output
from lf_models.precision import choose_precision


def load(path, cutoff_len=None, **model_kwargs):
    return load_model(ModelArguments(model_name_or_path=str(path), **model_kwargs),
                      FinetuningArguments(finetuning_type="full"), choose_precision(), False, cutoff_len=cutoff_len)


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn", "llama3"])
def test_rope_scaling_factor_comes_from_cutoff_len(kind, tiny_llama):
    model = load(tiny_llama, cutoff_len=1500, rope_scaling=kind)  # the tiny model's context is 512
    params = model.config.rope_parameters
    assert params["rope_type"] == kind and params["factor"] == 3.0
    assert model.config.max_position_embeddings == 1536
    ids = torch.randint(3, 300, (1, 600), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scaled = model(input_ids=ids).logits
    assert torch.isfinite(scaled).all()
    if kind == "linear":
        with torch.no_grad():
            plain = load(tiny_llama)(input_ids=ids).logits
        assert not torch.allclose(scaled, plain)


def test_rope_scaling_is_skipped_when_the_context_fits(tiny_llama, caplog):
    model = load(tiny_llama, cutoff_len=256, rope_scaling="linear")
    assert model.config.rope_parameters.get("rope_type", "default") == "default"
    assert "no scaling applied" in caplog.text


@pytest.mark.parametrize(("choice", "expected"), [("disabled", "eager"), ("sdpa", "sdpa")])
def test_attention_choice(choice, expected, tiny_llama):
    assert load(tiny_llama, flash_attn=choice).config._attn_implementation == expected


def test_fa2_falls_back_to_sdpa_where_it_cannot_run(tiny_llama, caplog):
    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    assert load(tiny_llama, flash_attn="fa2").config._attn_implementation == "sdpa"
    assert "using sdpa instead" in caplog.text


def test_upcasts_under_half_precision(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    assert upcast_layernorm(model) == 2 * 2 + 1  # two norms per layer, two layers, and the final norm
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n)
    upcast_lmhead_output(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as mixed-precision training runs it
        assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.dtype == torch.float32


def test_moe_blocks_become_zero3_leaf_modules(tiny_tokenizer, tmp_path, monkeypatch):
    import sys
    import types

    import transformers

    from lf_models.patches import mark_moe_leaf_modules

    config = transformers.MixtralConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        num_local_experts=2, num_experts_per_tok=1)
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert mark_moe_leaf_modules(model) == []  # no ZeRO-3: nothing to do
    marked = []
    fake = types.ModuleType("deepspeed.utils")
    fake.set_z3_leaf_modules = lambda m, classes: marked.extend(c.__name__ for c in classes)
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", fake)
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    assert mark_moe_leaf_modules(model) == marked == ["MixtralSparseMoeBlock"]
