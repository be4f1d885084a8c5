"""quantization_method (bnb, hqq, eetq; gptq/awq/aqlm/... come with the checkpoint) and
quantization_device_map: bad combinations refused when the config is read, missing packages and GPUs
named in one line before any weight loads."""

from __future__ import annotations

import pytest
import torch

from lf_data.errors import ConfigError
from lf_models import quantization
from lf_models.args import FinetuningArguments, ModelArguments


def args(tiny_llama, **kwargs) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_llama), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"quantization_bit": 5}, "quantization_bit=5: quantization_method bnb quantises to 4, 8 bits."),
    ({"quantization_bit": 7, "quantization_method": "hqq"},
     "quantization_bit=7: quantization_method hqq quantises to 1, 2, 3, 4, 5, 6, 8 bits."),
    ({"quantization_bit": 4, "quantization_method": "eetq"}, "quantization_bit=4: quantization_method eetq quantises "
                                                             "to 8 bits."),
    ({"quantization_bit": 4, "quantization_method": "gptq"}, "quantization_method: gptq does not quantise on the fly"),
    ({"quantization_bit": 8, "quantization_device_map": "auto"}, "quantization_device_map: auto spreads a 4-bit"),
    ({"quantization_device_map": "auto"}, "quantization_device_map: auto spreads a 4-bit bitsandbytes model over the "
                                          "GPUs; it needs quantization_bit: 4 with quantization_method: bnb "
                                          "(quantization_bit is not set)."),
])
def test_bad_combinations_are_refused_when_read(tiny_llama, kwargs, message):
    with pytest.raises(ConfigError) as err:
        args(tiny_llama, **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_accepted_combinations(tiny_llama):
    assert args(tiny_llama, quantization_bit=3, quantization_method="hqq").quantization_bit == 3
    assert args(tiny_llama, quantization_bit=8, quantization_method="eetq").quantization_method == "eetq"
    assert args(tiny_llama, quantization_method="awq").quantization_bit is None  # names the checkpoint's method
    made = args(tiny_llama, quantization_bit=4, quantization_device_map="auto")
    assert quantization.quantization_load_kwargs(made) == {"device_map": "auto"}
    assert quantization.quantization_load_kwargs(args(tiny_llama, quantization_bit=4)) == {}


def refuse_weights(monkeypatch):
    """Any attempt to load weights fails the test: the answer must come first."""
    from transformers import LlamaForCausalLM

    def boom(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", boom)


@pytest.mark.skipif(torch.cuda.is_available(), reason="names the GPU this machine lacks")
def test_hqq_names_its_package_and_the_gpu_before_loading(tiny_llama, monkeypatch):
    from lf_models.loader import load_model
    from lf_models.precision import Precision

    refuse_weights(monkeypatch)
    monkeypatch.setattr(quantization, "_installed", lambda module: module != "hqq")
    with pytest.raises(ConfigError) as err:
        load_model(args(tiny_llama, quantization_bit=4, quantization_method="hqq"), FinetuningArguments(),
                   Precision(bf16=False, fp16=False), is_trainable=True)
    assert str(err.value) == ("quantization_method: hqq needs the hqq package (pip install 'lf-models[hqq]') and a "
                              "CUDA GPU (transformers places HQQ layers on the GPU; CPU placement is refused); this "
                              "machine lacks it.")
    monkeypatch.setattr(quantization, "_installed", lambda module: True)  # installed, still no GPU
    with pytest.raises(ConfigError, match=r"^quantization_method: hqq needs a CUDA GPU \(transformers"):
        load_model(args(tiny_llama, quantization_bit=4, quantization_method="hqq"), FinetuningArguments(),
                   Precision(bf16=False, fp16=False), is_trainable=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="names the GPU this machine lacks")
def test_eetq_says_why_in_one_line(tiny_llama, monkeypatch):
    from lf_models.loader import load_model
    from lf_models.precision import Precision

    refuse_weights(monkeypatch)
    with pytest.raises(ConfigError) as err:
        load_model(args(tiny_llama, quantization_bit=8, quantization_method="eetq"), FinetuningArguments(),
                   Precision(bf16=False, fp16=False), is_trainable=True)
    text = str(err.value)
    assert text.startswith("quantization_method: eetq needs a CUDA GPU and the kernels package (pip install kernels)")
    assert "no wheel on PyPI" in text and "\n" not in text


def test_bnb_stays_the_default(tiny_llama):
    from transformers import BitsAndBytesConfig

    made = quantization.quantization_config(args(tiny_llama, quantization_bit=4), None, torch.bfloat16)
    assert isinstance(made, BitsAndBytesConfig) and made.load_in_4bit and made.bnb_4bit_quant_type == "nf4"
    assert made.bnb_4bit_compute_dtype == torch.bfloat16 and made.bnb_4bit_use_double_quant


def test_which_runs_may_use_bitsandbytes(tiny_llama, tmp_path, monkeypatch):
    """lf train keeps bitsandbytes out of a run only when nothing in it can use it (tests/lf_train/test_stages.py
    runs one); anything it cannot tell counts as may."""
    import json
    import shutil

    def may(optim=None, other_models=False, **model):
        return quantization.may_use_bitsandbytes(ModelArguments(**{"model_name_or_path": str(tiny_llama), **model}),
                                                 optim, other_models)

    assert not may() and not may("adamw_torch_fused") and not may("galore_adamw")
    assert not may(model_name_or_path="smollm2-135m-instruct")  # GGUF weights load de-quantised
    assert may(quantization_bit=4) and may(quantization_bit=8, quantization_method="hqq")
    for optim in ("adamw_bnb_8bit", "paged_adamw_32bit", "lion_32bit", "ademamix", "galore_adamw_8bit", "adamw_8bit"):
        assert may(optim), optim
    assert may(other_models=True)  # a reference or reward model may come quantised
    quantised = tmp_path / "bnb-4bit"
    shutil.copytree(tiny_llama, quantised)
    config = json.loads((quantised / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantised / "config.json").write_text(json.dumps(config))
    assert may(model_name_or_path=str(quantised))
    # a hub id: its config.json from the Hugging Face cache when it is there, else "may"
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert may(model_name_or_path="someone/tiny")  # not in the cache: its config cannot be read without the hub
    snapshot = hub / "models--someone--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (hub / "models--someone--tiny" / "refs").mkdir()
    (hub / "models--someone--tiny" / "refs" / "main").write_text("abc123")
    shutil.copy(tiny_llama / "config.json", snapshot / "config.json")
    assert not may(model_name_or_path="someone/tiny")
    shutil.copy(quantised / "config.json", snapshot / "config.json")
    assert may(model_name_or_path="someone/tiny")
