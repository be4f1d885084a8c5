"""The chat engine behind `lf api`, `lf chat`, lf-eval and lf-board: prompts from the training
template, streaming, stop strings, dynamic batching, adapters, reward scores and config errors."""

from __future__ import annotations

import threading

import pytest
import yaml

from lf_data.errors import ConfigError
from lf_serve import RequestError, load_engine
from lf_serve.decoding import RowDecoder
from lf_serve.tool_calls import forced_call_prefix, parse_tool_calls

USER = [{"role": "user", "content": "Who are you?"}]


def test_prompt_is_the_training_template(tiny_engine, tiny_tokenizer):
    from lf_data.templates import get_template

    expected = get_template("chatml").encode_prompt(tiny_tokenizer, USER, None)
    assert tiny_engine.encode_chat(USER) == expected
    text = tiny_tokenizer.decode(expected)
    assert text == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_engine.template.stop_words == ("<|im_end|>",)


def test_stream_pieces_join_to_the_chat_answer(tiny_engine):
    (response,) = tiny_engine.chat(USER)
    pieces = list(tiny_engine.stream_chat(USER))
    assert "".join(pieces) == response.text
    assert len(pieces) > 1
    assert response.completion_tokens == 16 and response.finish_reason == "length"


def test_16_concurrent_requests_share_batched_generate_calls(tiny_llama):
    engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "temperature": 0,
                          "max_new_tokens": 12, "batch_wait_ms": 200})
    try:
        prompts = [[{"role": "user", "content": f"Question {i}: who are you?"}] for i in range(16)]
        solo = [engine.chat(p)[0].text for p in prompts[:2]]  # each alone: two calls
        assert engine.generate_calls == 2
        results: list = [None] * 16
        barrier = threading.Barrier(16)

        def ask(i: int) -> None:
            barrier.wait()
            results[i] = engine.chat(prompts[i])[0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert engine.generate_calls - 2 <= 2  # 16 requests, one or two batched generate calls
        assert [r.text for r in results[:2]] == solo  # batching (left padding) does not change greedy answers
        assert all(r.completion_tokens == 12 for r in results)
        assert len(engine.batch_chat(prompts)) == 16
        assert engine.generate_calls - 2 <= 3
    finally:
        engine.close()


def test_row_decoder_holds_back_a_stop_string(tiny_tokenizer):
    pieces, finishes = [], []
    ids = tiny_tokenizer.encode("The quick brown fox jumps over the lazy dog.", add_special_tokens=False)
    decoder = RowDecoder(tiny_tokenizer, {tiny_tokenizer.eos_token_id}, ("fox jumps",), 100, True,
                         lambda text, finish, n: (pieces.append(text), finishes.append(finish)))
    for token in ids:
        if decoder.feed(token):
            break
    assert "".join(pieces) == "The quick brown "
    assert not any("fox" in p for p in pieces)
    assert finishes[-1] == "stop" and finishes.count("stop") == 1


LONG_TEXT = "Grüße aus Köln, 東京タワー 🚀🚀 and the quick brown fox. Ünïcödé ends here! " * 12


def _metaspace_tokenizer():
    """SentencePiece's way with spaces (a word-initial "▁", dropped at the start of a decode), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator([LONG_TEXT], trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.mark.parametrize("kind", ["byte-level", "metaspace"])
def test_row_decoder_streams_the_whole_decode_reading_short_windows(kind, tiny_tokenizer):
    """A long answer with multi-byte characters and word-initial spaces: the streamed pieces join to the
    full decode, while each decode call reads only a few ids (it used to decode the whole answer per token)."""
    tokenizer = tiny_tokenizer if kind == "byte-level" else _metaspace_tokenizer()
    ids = tokenizer.encode(LONG_TEXT, add_special_tokens=False)
    expected = tokenizer.decode(ids, skip_special_tokens=True)
    assert len(ids) > 150 and "🚀" in expected
    pieces, widths, decode = [], [], tokenizer.decode

    def counting_decode(token_ids, **kwargs):
        widths.append(len(token_ids))
        return decode(token_ids, **kwargs)

    tokenizer.decode = counting_decode
    decoder = RowDecoder(tokenizer, set(), (), len(ids), True, lambda text, finish, n: pieces.append(text))
    for token in ids:
        decoder.feed(token)
    assert decoder.finish_reason == "length" and "".join(pieces) == expected
    assert max(widths) <= 8 and len(widths) == 2 * len(ids)
    assert sum(len(p) > 0 for p in pieces) > len(ids) / 4  # streamed as it went, not at the end


def test_stop_strings_and_eos(tiny_engine):
    full = tiny_engine.chat(USER)[0].text
    word = full[4:6]
    cut = tiny_engine.chat(USER, stop=[word])[0]
    assert cut.text == full[:full.find(word)] and cut.finish_reason == "stop"


def test_roles_are_checked(tiny_engine):
    with pytest.raises(RequestError, match="alternate"):
        tiny_engine.chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(RequestError, match="last message"):
        tiny_engine.chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(RequestError, match="unknown role"):
        tiny_engine.chat([{"role": "robot", "content": "a"}])
    with pytest.raises(RequestError, match="non-empty"):
        tiny_engine.chat([])
    with pytest.raises(RequestError, match="context"):
        tiny_engine.chat(USER, max_new_tokens=600)


def test_closing_a_stream_cancels_it_and_the_engine_keeps_serving(tiny_engine):
    stream = tiny_engine.stream_chat(USER)
    next(stream)
    stream.close()
    assert tiny_engine.chat(USER)[0].completion_tokens == 16


def test_tool_call_text_of_every_format_parses_back():
    from lf_data.templates import TOOL_FORMATS

    calls = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}, {"name": "now", "arguments": {}}]
    for name, fmt in TOOL_FORMATS.items():
        expected = calls[:1] if name == "glm4" else calls
        assert parse_tool_calls(fmt.format_calls(expected), name) == expected, name
        assert parse_tool_calls("The capital of France is Paris.", name) is None, name
    assert parse_tool_calls('Call {"name": "x", "arguments": {}} now', "default") is None


def test_forced_call_openings_are_the_start_of_each_formats_call_text():
    """tool_choice writes these openings after the generation prompt; each is exactly how that format's
    call text begins (trailing spaces left to the model), and GLM-4 can only force a named call."""
    from lf_data.templates import TOOL_FORMATS

    call = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    for name, fmt in TOOL_FORMATS.items():
        text = fmt.format_calls(call)
        named = forced_call_prefix(name, "get_weather")
        assert text.startswith(named) and "get_weather" in named and "Paris" not in named, name
        anyone = forced_call_prefix(name)
        assert anyone is None if name == "glm4" else (text.startswith(anyone) and "get_weather" not in anyone), name
    assert forced_call_prefix("qwen") == '<tool_call>\n{"name":'
    assert forced_call_prefix(None) is None  # template: auto, no known format: treated as auto


def test_config_errors_before_loading(tiny_llama):
    with pytest.raises(ConfigError, match="Did you mean 'temperature'"):
        load_engine({"model_name_or_path": str(tiny_llama), "temprature": 0.5})
    with pytest.raises(ConfigError, match="infer_backend"):
        load_engine({"model_name_or_path": str(tiny_llama), "infer_backend": "tgi"})
    with pytest.raises(ConfigError, match="adapter_name_or_path"):
        load_engine({"model_name_or_path": str(tiny_llama), "adapter_name_or_path": "/nonexistent/adapter"})
    with pytest.raises(ConfigError, match="unknown template"):
        load_engine({"model_name_or_path": str(tiny_llama), "template": "chatmll"})


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_llama):
    """A LoRA adapter as `lf train` leaves it (with lf_config.yaml naming the template)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    (path / "lf_config.yaml").write_text(yaml.safe_dump({"template": "default", "stage": "sft"}))
    return path


def test_base_plus_adapter_uses_the_trained_template(tiny_llama, tiny_tokenizer, adapter_dir, monkeypatch):
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraModel
    from transformers import AutoModelForCausalLM

    merging_threads = []
    merge = LoraModel.merge_and_unload
    monkeypatch.setattr(LoraModel, "merge_and_unload",
                        lambda self, *a, **k: merging_threads.append(threading.current_thread()) or merge(self, *a, **k))
    # no model_name_or_path: the base the adapter was trained on (lf_data.run_folder.base_model)
    engine = load_engine({"adapter_name_or_path": str(adapter_dir), "temperature": 0, "max_new_tokens": 10})
    try:
        # the engine's worker thread loads and merges (torch's OpenMP teams: lf_serve.engines.huggingface)
        assert merging_threads == [engine._worker] and engine._worker is not threading.current_thread()
        decoding_threads = set()
        engine.lm.register_forward_pre_hook(lambda *_: decoding_threads.add(threading.current_thread()))
        assert engine.template.name == "default"  # from the adapter's training config
        assert engine.model_name == adapter_dir.name
        ids = engine.encode_chat(USER)
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter_dir).eval()
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                     eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id)
        expected = tiny_tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
        assert engine.chat(USER)[0].text == expected
        assert decoding_threads == {engine._worker}
    finally:
        engine.close()


def test_reward_model_scores_are_the_value_head_at_the_last_token(tiny_llama, adapter_dir, tiny_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from lf_models.value_head import ValueHeadModel

    torch.manual_seed(1)
    head = ValueHeadModel(AutoModelForCausalLM.from_pretrained(tiny_llama))
    with torch.no_grad():
        head.v_head.weight.normal_()
    head.save_value_head(adapter_dir)
    engine = load_engine({"model_name_or_path": str(tiny_llama), "adapter_name_or_path": str(adapter_dir),
                          "stage": "rm"})
    try:
        texts = ["I am Lumen, made by the LF team.", "The quick brown fox."]
        scoring_threads = set()
        hook = engine.model.register_forward_pre_hook(lambda *_: scoring_threads.add(threading.current_thread()))
        scores = engine.get_scores(texts)
        hook.remove()
        assert scoring_threads == {engine._worker}  # scored between decoding steps, by the model's own thread
        with torch.no_grad():
            for text, score in zip(texts, scores, strict=True):
                ids = torch.tensor([tiny_tokenizer.encode(text, add_special_tokens=False)])
                _, values = engine.model(input_ids=ids)
                assert score == pytest.approx(float(values[0, -1]))
        assert scores[0] != pytest.approx(scores[1])
        assert torch.equal(engine.model.v_head.weight, head.v_head.weight)
        long = texts[1] * 10_000  # cut by characters before tokenising: the same first max_length tokens
        assert engine.get_scores([long], max_length=8) == pytest.approx(
            engine.get_scores([texts[1] * 3], max_length=8))
        with pytest.raises(RequestError, match=r"messages\[1\].*surrogate"):
            engine.get_scores(["fine", "bad \ud800"])
    finally:
        engine.close()
    with pytest.raises(RequestError, match="reward model"):
        load_engine({"model_name_or_path": str(tiny_llama)}).get_scores(["x"])
