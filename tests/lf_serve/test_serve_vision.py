"""Images for a vision-language model: a tiny Qwen2-VL served by `lf api`'s app receives an image the
official openai client sends as a data: URL (the vision tower sees the processor's pixels, the answer is
what transformers generates from the same inputs); text models refuse images; image sources are policed."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import pytest
from serve_helpers import Server

from lf_serve import RequestError, load_engine
from lf_serve.images import ImagePolicy, load_image

openai = pytest.importorskip("openai")
QUESTION = "What is in this picture?"


def make_image(seed: int, size: tuple[int, int] = (80, 60)):
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8"))


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def vlm_engine(tiny_qwen2_vl):
    engine = load_engine({"model_name_or_path": str(tiny_qwen2_vl), "template": "qwen2_vl", "temperature": 0,
                          "max_new_tokens": 12, "batch_wait_ms": 150, "served_model_name": "tiny-vl"})
    yield engine
    engine.close()


def reference_answer(model_dir: Path, image, question: str, max_new_tokens: int = 12) -> tuple[str, int]:
    """Qwen2-VL's own prompt layout and processing, generated greedily with transformers directly."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    pixels = processor(images=[image], return_tensors="pt")
    n = int(pixels["image_grid_thw"][0].prod()) // processor.merge_size ** 2
    text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            + "<|image_pad|>" * n + f"<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer([text], return_tensors="pt")
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    with torch.no_grad():
        out = model.generate(**ids, **pixels, mm_token_type_ids=(ids["input_ids"] == image_token).long(),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    width = ids["input_ids"].shape[1]
    return tokenizer.decode(out[0, width:], skip_special_tokens=True), width


def test_openai_client_image_reaches_the_vision_tower(vlm_engine, tiny_qwen2_vl):
    import torch
    from transformers import AutoImageProcessor

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    visual = vlm_engine.lm.model.visual
    hook = visual.register_forward_hook(lambda module, args, kwargs, out: seen.append((args[0], kwargs["grid_thw"])),
                                        with_kwargs=True)
    image, other = make_image(0), make_image(1, (64, 100))
    try:
        with Server(create_app(vlm_engine)) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)

            def ask(img=None, stream=False):
                content = [{"type": "text", "text": QUESTION}]
                if img is not None:
                    content.insert(0, {"type": "image_url", "image_url": {"url": data_url(img)}})
                return client.chat.completions.create(model="tiny-vl", messages=[{"role": "user", "content": content}],
                                                      temperature=0, stream=stream)

            with_image = ask(image)
            assert len(seen) == 1
            expected = AutoImageProcessor.from_pretrained(tiny_qwen2_vl)(images=[image], return_tensors="pt")
            assert torch.equal(seen[0][0], expected["pixel_values"])  # the vision tower got these pixels
            assert torch.equal(seen[0][1], expected["image_grid_thw"])

            answer, prompt_tokens = reference_answer(tiny_qwen2_vl, image, QUESTION)
            assert with_image.choices[0].message.content == answer
            image_tokens = int(expected["image_grid_thw"].prod()) // 4  # 84x56 pixels: 6x4 patches, merged 2x2
            assert image_tokens == 6 and with_image.usage.prompt_tokens == prompt_tokens

            streamed = "".join(c.choices[0].delta.content or "" for c in ask(image, stream=True) if c.choices)
            assert streamed == answer
            other_answer = ask(other).choices[0].message.content
            assert other_answer == reference_answer(tiny_qwen2_vl, other, QUESTION)[0]
            assert other_answer != answer  # same question, another picture: another answer
            seen.clear()
            text_only = ask()
            assert not seen  # no picture, no vision tower
            assert text_only.usage.prompt_tokens == prompt_tokens - image_tokens - 2  # and no vision markers
    finally:
        hook.remove()


def create_app(engine):
    from lf_serve.api.app import create_app as create

    return create(engine)


def test_concurrent_image_requests_batch_with_their_own_pictures(vlm_engine):
    """Two requests with images of different sizes share one left-padded generate call (M-RoPE positions
    per row) and answer as they do alone."""
    pictures = [make_image(2), make_image(3, (112, 56))]
    question = [{"role": "user", "content": "Describe <image> briefly."}]
    alone = [vlm_engine.chat(question, images=[p])[0].text for p in pictures]
    before = vlm_engine.generate_calls
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = vlm_engine.chat(question, images=[pictures[i]])[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone
    assert vlm_engine.generate_calls - before == 1
    assert alone[0] != alone[1]


def test_image_placeholders_and_image_errors(vlm_engine):
    tokenizer = vlm_engine.tokenizer
    picture = make_image(4, (56, 56))  # 56x56: a 4x4 patch grid, 4 image tokens
    request = vlm_engine.chat_request([{"role": "user", "content": "Before <image> after"}], images=[picture])
    text = tokenizer.decode(request.prompt_ids)
    assert "user\nBefore <|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|> after<|im_end|>" in text
    assert request.image_tensors["image_grid_thw"].tolist() == [[1, 4, 4]]
    no_placeholder = vlm_engine.chat_request([{"role": "user", "content": "Hi"}], images=[picture, picture])
    assert "user\n" + ("<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>") * 2 + "Hi" in \
        tokenizer.decode(no_placeholder.prompt_ids)
    with pytest.raises(RequestError, match="2 <image> placeholder"):
        vlm_engine.chat([{"role": "user", "content": "<image> and <image>"}], images=[picture])
    typed = vlm_engine.chat_request([{"role": "user", "content": "<|image_pad|> what?"}])  # the model's image token
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") not in typed.prompt_ids  # typed as text: stays text
    assert "<|image_pad|> what?" in tokenizer.decode(typed.prompt_ids)


def test_text_models_refuse_images_with_a_400(tool_server):
    client = openai.OpenAI(base_url=tool_server.url + "/v1", api_key="sk-test", max_retries=0, timeout=60)
    content = [{"type": "image_url", "image_url": {"url": data_url(make_image(5))}}, {"type": "text", "text": "Hi"}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="lumen", messages=[{"role": "user", "content": content}])
    assert exc.value.status_code == 400 and "does not take images" in exc.value.message
    assert "qwen2_vl" in exc.value.message


def test_image_sources_are_policed(tmp_path):
    allowed = tmp_path / "images"
    allowed.mkdir()
    make_image(6).save(allowed / "cat.png")
    make_image(7).save(tmp_path / "secret.png")
    (allowed / "notes.png").write_text("not an image")
    policy = ImagePolicy(image_dir=str(allowed), max_bytes=1 << 20)
    assert load_image(data_url(make_image(6)), policy).size == (80, 60)
    assert load_image("cat.png", policy).size == (80, 60)
    assert load_image(f"file://{allowed / 'cat.png'}", policy).mode == "RGB"
    for ref, message in [("../secret.png", "outside"), (str(tmp_path / "secret.png"), "outside"),
                         ("notes.png", "not a readable image"), ("missing.png", "does not exist"),
                         ("http://127.0.0.1:9/x.png", "allow_image_urls"), ("ftp://host/x.png", "scheme"),
                         ("data:image/png;base64,@@@", "invalid base64"), ("data:image/png,rawbytes", "base64")]:
        with pytest.raises(RequestError, match=message):
            load_image(ref, policy)
    with pytest.raises(RequestError, match="image_dir is not set"):
        load_image("cat.png", ImagePolicy())
    with pytest.raises(RequestError, match="larger than"):
        load_image(data_url(make_image(8)), ImagePolicy(max_bytes=100))
