"""The vLLM engine against a fake `vllm` module that records what it is asked (vLLM cannot run on a
CPU; bench/vllm_smoke.py runs the real one on a GPU host). The fake answers each prompt with a
fixed text, one token per step, like vLLM's cumulative RequestOutput stream."""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import dataclass, field

import pytest

from lf_data.errors import ConfigError
from lf_serve import load_engine

ANSWER = ["Paris", " is", " the", " capital", "."]


@dataclass
class Completion:
    index: int
    text: str = ""
    token_ids: list = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Output:
    request_id: str
    outputs: list
    finished: bool = False


def fake_vllm(record: dict) -> types.ModuleType:
    vllm = types.ModuleType("vllm")

    class AsyncEngineArgs:
        def __init__(self, **kwargs):
            record["engine_args"] = kwargs

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            record.setdefault("sampling", []).append(kwargs)

    class AsyncLLMEngine:
        @classmethod
        def from_engine_args(cls, args):
            record["loop"] = asyncio.get_running_loop()
            return cls()

        async def generate(self, prompt, params, request_id, lora_request=None):
            record.setdefault("generate", []).append({"prompt": prompt, "request_id": request_id,
                                                      "lora_request": lora_request})
            assert asyncio.get_running_loop() is record["loop"]  # always on the engine's own loop
            n, limit = params.kwargs["n"], params.kwargs["max_tokens"]
            outs = [Completion(index=i) for i in range(n)]
            for step, piece in enumerate(ANSWER):
                for c in outs:
                    if c.finish_reason is None:
                        c.text += piece
                        c.token_ids.append(step)
                        if len(c.token_ids) >= limit:
                            c.finish_reason = "length"
                        elif step == len(ANSWER) - 1:
                            c.finish_reason = "stop"
                await asyncio.sleep(0)
                yield Output(request_id, [Completion(c.index, c.text, list(c.token_ids), c.finish_reason) for c in outs],
                             all(c.finish_reason for c in outs))
                if all(c.finish_reason for c in outs):
                    return

        async def abort(self, request_id):
            record.setdefault("aborted", []).append(request_id)

        def shutdown(self):
            record["shutdown"] = True

    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")

    class LoRARequest:
        def __init__(self, name, lora_id, path):
            self.lora_name, self.lora_int_id, self.lora_path = name, lora_id, path

    lora_request.LoRARequest = LoRARequest
    vllm.AsyncEngineArgs, vllm.SamplingParams, vllm.AsyncLLMEngine = AsyncEngineArgs, SamplingParams, AsyncLLMEngine
    vllm.lora, lora.request = lora, lora_request
    return {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": lora_request}


@pytest.fixture
def record(monkeypatch) -> dict:
    record: dict = {}
    for name, module in fake_vllm(record).items():
        monkeypatch.setitem(sys.modules, name, module)
    return record


def test_vllm_engine_arguments_lora_and_sampling(record, tiny_llama, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    engine = load_engine({"model_name_or_path": str(tiny_llama), "adapter_name_or_path": str(adapter),
                          "template": "chatml", "infer_backend": "vllm", "vllm_maxlen": 256, "vllm_gpu_util": 0.5,
                          "vllm_enforce_eager": True, "vllm_tensor_parallel_size": 2, "vllm_max_lora_rank": 64,
                          "vllm_config": {"swap_space": 1}, "temperature": 0})
    try:
        args = record["engine_args"]
        assert args["model"] == str(tiny_llama)
        assert (args["max_model_len"], args["gpu_memory_utilization"], args["enforce_eager"],
                args["tensor_parallel_size"], args["enable_lora"], args["max_lora_rank"], args["swap_space"]) == \
            (256, 0.5, True, 2, True, 64, 1)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        (answer,) = engine.chat(messages, stop=["###"], seed=3)
        assert answer.text == "Paris is the capital." and answer.finish_reason == "stop"
        assert answer.completion_tokens == 5 and answer.prompt_tokens == len(engine.encode_chat(messages))
        call = record["generate"][-1]
        assert call["prompt"] == {"prompt_token_ids": engine.encode_chat(messages)}  # the LF template's ids
        assert call["lora_request"].lora_path == str(adapter)
        params = record["sampling"][-1]
        assert params["temperature"] == 0.0 and params["top_k"] == -1 and params["seed"] == 3
        assert params["stop"] == ["<|im_end|>", "###"]
        assert params["stop_token_ids"] == [engine.tokenizer.eos_token_id]
        assert params["max_tokens"] == 256 - answer.prompt_tokens  # the rest of the context

        assert "".join(engine.stream_chat(messages)) == "Paris is the capital."
        short = engine.chat(messages, n=2, max_tokens=2, temperature=0.7, top_p=0.9)
        assert [(r.text, r.finish_reason) for r in short] == [("Paris is", "length")] * 2
        assert record["sampling"][-1]["n"] == 2 and record["sampling"][-1]["temperature"] == 0.7

        async def consume():
            return [piece async for piece in engine.astream_chat(messages)]

        assert "".join(asyncio.run(consume())) == "Paris is the capital."
    finally:
        engine.close()
    assert record["shutdown"]


def test_vllm_engine_serves_the_api(record, tiny_llama):
    from fastapi.testclient import TestClient

    from lf_serve.api.app import create_app

    engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "infer_backend": "vllm",
                          "served_model_name": "fake"})
    try:
        client = TestClient(create_app(engine))
        reply = client.post("/v1/chat/completions", json={"model": "fake", "messages": [
            {"role": "user", "content": "Capital of France?"}]}).json()
        assert reply["choices"][0]["message"]["content"] == "Paris is the capital."
        assert record["generate"][-1]["lora_request"] is None
        assert "enable_lora" not in record["engine_args"]
    finally:
        engine.close()


def test_vllm_config_errors(record, tiny_llama, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match="one LoRA adapter"):
        load_engine({"model_name_or_path": str(tiny_llama), "infer_backend": "vllm",
                     "adapter_name_or_path": f"{tmp_path / 'a'},{tmp_path / 'b'}"})
    with pytest.raises(ConfigError, match="vllm_gpu_util"):
        load_engine({"model_name_or_path": str(tiny_llama), "infer_backend": "vllm", "vllm_gpu_util": 1.5})


def test_missing_vllm_says_what_to_install(monkeypatch, tiny_llama):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match=r"lf-serve\[vllm\]"):
        load_engine({"model_name_or_path": str(tiny_llama), "infer_backend": "vllm"})


def test_vllm_engine_sends_media_as_multi_modal_data(record, tiny_qwen2_vl, tiny_llama, tmp_path):
    """A VLM on vLLM: the prompt ids hold one model marker per item (vLLM's processor expands them) and
    the items go with it as multi_modal_data, read within the model's limits; kinds the model does not
    take, and any media on a text model, are a 400."""
    import base64
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image
    from serve_helpers import wav_bytes, write_video

    from lf_serve import RequestError
    from lf_serve.api.app import create_app

    engine = load_engine({"model_name_or_path": str(tiny_qwen2_vl), "template": "qwen2_vl", "infer_backend": "vllm",
                          "served_model_name": "vl", "video_maxlen": 3})
    clip = write_video(tmp_path / "clip.mp4")
    picture = Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype("uint8"))
    try:
        assert record["engine_args"]["limit_mm_per_prompt"] == {"image": 16, "video": 4}
        messages = [{"role": "user", "content": "Is <video> like <image>?"}]
        (answer,) = engine.chat(messages, images=[picture], videos=[str(clip)])
        assert answer.text == "Paris is the capital."
        prompt = record["generate"][-1]["prompt"]
        text = engine.tokenizer.decode(prompt["prompt_token_ids"])
        assert ("user\nIs <|vision_start|><|video_pad|><|vision_end|> like <|vision_start|><|image_pad|><|vision_end|>?"
                in text)
        (image,) = prompt["multi_modal_data"]["image"]
        assert image.size == (80, 60) and np.array_equal(np.asarray(image), np.asarray(picture))
        (video,) = prompt["multi_modal_data"]["video"]
        assert video.shape == (3, 56, 56, 3) and video.dtype == np.uint8  # video_maxlen: 3 frames of 8
        plain = engine.chat([{"role": "user", "content": "Hi"}])
        assert plain[0].text == "Paris is the capital." and "multi_modal_data" not in record["generate"][-1]["prompt"]

        client = TestClient(create_app(engine))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        reply = client.post("/v1/chat/completions", json={"model": "vl", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is it?"}]}]})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "Paris is the capital."
        (image,) = record["generate"][-1]["prompt"]["multi_modal_data"]["image"]
        assert np.array_equal(np.asarray(image), np.asarray(picture))
        audio = {"data": base64.b64encode(wav_bytes()).decode(), "format": "wav"}
        reply = client.post("/v1/chat/completions", json={"model": "vl", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": audio}]}]})
        assert reply.status_code == 400 and "does not take audios" in reply.json()["error"]["message"]
    finally:
        engine.close()
    text_engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "infer_backend": "vllm"})
    try:
        assert "limit_mm_per_prompt" not in record["engine_args"]
        with pytest.raises(RequestError, match="does not take images; serve a model that does .*qwen2_vl"):
            text_engine.chat([{"role": "user", "content": "Hi"}], images=[picture])
    finally:
        text_engine.close()
