"""lf-models' side of refusing bad inputs early: media a model cannot take (config.json only),
tokenizer-only folders for `lf data`, and `.bin` pickles that torch's weights_only refuses."""

import json
import shutil

import pytest

from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.families import check_media_support, is_vlm
from lf_models.loader import load_model, tokenizer_for_reference
from lf_models.precision import choose_precision


def config_folder(tmp_path, model_type):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_is_vlm_reads_config_json_only(tmp_path, tiny_tokenizer_dir):
    assert is_vlm(str(config_folder(tmp_path, "qwen2_vl"))) is True
    assert is_vlm(str(config_folder(tmp_path, "llama"))) is False
    assert is_vlm(str(config_folder(tmp_path, "llava_next"))) is True
    assert is_vlm(str(config_folder(tmp_path, "blip-2"))) is False  # a family LF does not feed media to
    assert is_vlm(str(tiny_tokenizer_dir)) is None  # no config.json: unknown
    assert is_vlm("no-such-org/no-such-model") is None  # a hub id not in the cache: unknown, nothing downloaded


def test_check_media_support(tmp_path, tiny_tokenizer_dir):
    text, vlm = str(config_folder(tmp_path, "llama")), str(config_folder(tmp_path, "qwen2_vl"))
    with pytest.raises(ConfigError, match=r"^dataset 'vl' has images but model '.*llama' \(model_type llama\) is a "
                                          r"text model: it would train on the placeholder text. Use a model LF feeds "
                                          r"media to \(families: .*qwen2_vl.*\) or remove the images column"):
        check_media_support(text, {"vl": ["images"]})
    with pytest.raises(ConfigError, match=r"^the data has images but .* is a text model"):
        check_media_support(text, True)
    with pytest.raises(ConfigError, match=r"dataset 'speech' has audios but .* is a multimodal model that "
                                          "takes images and videos only"):
        check_media_support(vlm, {"pics": ["images"], "speech": ["audios"]})
    check_media_support(vlm, {"pics": ["images", "videos"]})
    check_media_support(text, {})  # no media: nothing to check
    check_media_support(text, False)
    check_media_support(str(tiny_tokenizer_dir), True)  # unknown model: the loader finds out later
    check_media_support("no-such-org/no-such-model", True)
    check_media_support(None, True)


def test_tokenizer_for_a_tokenizer_only_folder(tiny_tokenizer_dir, tmp_path):
    tokenizer, template = tokenizer_for_reference(str(tiny_tokenizer_dir))
    assert tokenizer.eos_token == "<|im_end|>" and template is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="model folder .* has no config.json"):  # neither model nor tokenizer
        tokenizer_for_reference(str(empty))


class Payload:
    """What a hostile checkpoint holds: unpickling it calls a function."""

    def __reduce__(self):
        return (print, ("this ran while loading the weights",))


def test_pickled_model_weights_are_refused_in_one_line(tiny_llama, tmp_path, capsys):
    import torch

    folder = tmp_path / "hostile"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, folder / name)
    torch.save({"model.embed_tokens.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ConfigError) as caught:
        load_model(ModelArguments(model_name_or_path=str(folder)), FinetuningArguments(finetuning_type="full"),
                   choose_precision(), is_trainable=False)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: refused to load the weights: it imports print")
    assert "\n" not in message and "safetensors" in message
    assert "this ran" not in capsys.readouterr().out


def test_pickled_adapter_is_refused_in_one_line(tiny_llama, tmp_path, capsys):
    import torch
    from peft import LoraConfig

    adapter = tmp_path / "adapter"
    LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM",
               base_model_name_or_path=str(tiny_llama)).save_pretrained(adapter)
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": Payload()},
               adapter / "adapter_model.bin")
    with pytest.raises(ConfigError) as caught:
        load_model(ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(adapter)]),
                   FinetuningArguments(), choose_precision(), is_trainable=False)
    message = str(caught.value)
    assert message.startswith(f"{adapter / 'adapter_model.bin'}: refused to load the adapter: it imports print")
    assert "\n" not in message
    assert "this ran" not in capsys.readouterr().out
