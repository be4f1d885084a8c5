"""Audio for an audio-language model: a tiny Qwen2-Audio served by `lf api`'s app receives a sound the
official openai client sends as an input_audio part; the audio tower sees the model's own feature
extractor's features and the answer is what transformers generates from the same inputs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from serve_helpers import Server, wav_bytes

openai = pytest.importorskip("openai")
QUESTION = "What can you hear?"


@pytest.fixture(scope="module")
def tiny_qwen2_audio(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    from mm_helpers import build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"), tiny_tokenizer_dir)


def processor_answer(model_dir: Path, sound: bytes, question: str, max_new_tokens: int = 12):
    """Plain transformers: the model's processor on Qwen2-Audio's prompt layout, generated greedily."""
    import soundfile
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir).eval()
    wave, rate = soundfile.read(io.BytesIO(sound), dtype="float32")
    text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"<|audio_bos|><|AUDIO|><|audio_eos|>{question}<|im_end|>\n<|im_start|>assistant\n")
    inputs = processor(text=[text], audio=[wave], sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=processor.tokenizer.eos_token_id, pad_token_id=processor.tokenizer.pad_token_id)
    width = inputs["input_ids"].shape[1]
    return processor.tokenizer.decode(out[0, width:], skip_special_tokens=True), inputs


def test_openai_client_input_audio_reaches_the_audio_tower(tiny_qwen2_audio):
    import torch

    from lf_serve import load_engine
    from lf_serve.api.app import create_app

    engine = load_engine({"model_name_or_path": str(tiny_qwen2_audio), "template": "qwen2_audio", "temperature": 0,
                          "max_new_tokens": 12, "served_model_name": "tiny-audio"})
    sound = wav_bytes(1.0)
    seen: list = []
    hook = engine.lm.model.audio_tower.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    try:
        with Server(create_app(engine)) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
            content = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(sound).decode(), "format": "wav"}},
                       {"type": "text", "text": QUESTION}]
            reply = client.chat.completions.create(model="tiny-audio", messages=[{"role": "user", "content": content}],
                                                   temperature=0)
            image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
            with pytest.raises(openai.BadRequestError) as exc:
                client.chat.completions.create(model="tiny-audio", messages=[{"role": "user", "content": image}])
    finally:
        hook.remove()
        engine.close()
    assert "does not take images (it takes audios only)" in exc.value.message
    answer, inputs = processor_answer(tiny_qwen2_audio, sound, QUESTION)
    assert len(seen) == 1
    assert torch.equal(seen[0], inputs["input_features"])  # the tower got the feature extractor's features
    assert reply.choices[0].message.content == answer
    assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1]
