"""Images and videos for a vision-language model: a tiny Qwen2-VL served by `lf api`'s app receives an
image and a video the official openai client sends as data: URLs (the vision tower sees the processor's
pixels, the answer is what transformers generates from the same inputs); models refuse kinds they do not
take; media sources are policed."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import pytest
from serve_helpers import Server, wav_bytes, write_video

from lf_serve import RequestError
from lf_serve.media_sources import MediaPolicy, read_media

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
    assert request.media.tensors["image_grid_thw"].tolist() == [[1, 4, 4]]
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
    policy = MediaPolicy(media_dir=str(allowed), image_max_bytes=1 << 20)
    assert read_media("images", data_url(make_image(6)), policy).size == (80, 60)
    assert read_media("images", "cat.png", policy).size == (80, 60)
    assert read_media("images", f"file://{allowed / 'cat.png'}", policy).data == (allowed / "cat.png").read_bytes()
    for ref, message in [("../secret.png", "outside"), (str(tmp_path / "secret.png"), "outside"),
                         ("notes.png", "not a readable image"), ("missing.png", "does not exist"),
                         ("http://127.0.0.1:9/x.png", "allow_image_urls"), ("ftp://host/x.png", "scheme"),
                         ("data:image/png;base64,@@@", "invalid base64"), ("data:image/png,rawbytes", "base64")]:
        with pytest.raises(RequestError, match=message):
            read_media("images", ref, policy)
    with pytest.raises(RequestError, match="image_dir is not set"):
        read_media("images", "cat.png", MediaPolicy())
    with pytest.raises(RequestError, match=r"larger than 100 bytes \(image_max_bytes\)"):
        read_media("images", data_url(make_image(8)), MediaPolicy(image_max_bytes=100))


def processor_answer(model_dir: Path, question: str, videos: list, max_new_tokens: int = 12):
    """Plain transformers: the model's own processor on Qwen2-VL's prompt layout with the video's frames
    (read within the same limits), generated greedily; (answer, the processor's inputs)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from lf_models.media import MediaLimits, load_video

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    loaded = [load_video(str(v), MediaLimits()) for v in videos]
    text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            + "<|vision_start|><|video_pad|><|vision_end|>" * len(videos) + f"{question}<|im_end|>\n<|im_start|>assistant\n")
    inputs = processor(text=[text], videos=[frames for frames, _ in loaded], video_metadata=[m for _, m in loaded],
                       do_sample_frames=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=processor.tokenizer.eos_token_id, pad_token_id=processor.tokenizer.pad_token_id)
    width = inputs["input_ids"].shape[1]
    return processor.tokenizer.decode(out[0, width:], skip_special_tokens=True), inputs


def test_openai_client_video_reaches_the_vision_tower(vlm_engine, tiny_qwen2_vl, tmp_path):
    """A video_url part (a data: URL, as vLLM's API takes it): the vision tower gets the frames the model's
    own processor makes of the video sampled at video_fps, and the answer is plain transformers'."""
    import torch

    clip = write_video(tmp_path / "clip.mp4")
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    seen: list = []
    hook = vlm_engine.lm.model.visual.register_forward_hook(
        lambda module, args, kwargs, out: seen.append((args[0], kwargs["grid_thw"])), with_kwargs=True)
    try:
        with Server(create_app(vlm_engine)) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
            content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]
            reply = client.chat.completions.create(model="tiny-vl", messages=[{"role": "user", "content": content}],
                                                   temperature=0)
            with pytest.raises(openai.BadRequestError) as exc:  # a kind Qwen2-VL does not take
                audio = {"data": base64.b64encode(wav_bytes()).decode(), "format": "wav"}
                client.chat.completions.create(model="tiny-vl", temperature=0, messages=[{"role": "user", "content": [
                    {"type": "input_audio", "input_audio": audio}, {"type": "text", "text": "Hi"}]}])
    finally:
        hook.remove()
    assert exc.value.status_code == 400
    assert "does not take audios (it takes images and videos only)" in exc.value.message
    answer, inputs = processor_answer(tiny_qwen2_vl, QUESTION, [clip])
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]  # 4 frames of 56x56: 2 x 4 x 4 patches, 8 tokens
    assert len(seen) == 1
    assert torch.equal(seen[0][0], inputs["pixel_values_videos"]) and torch.equal(seen[0][1], inputs["video_grid_thw"])
    assert reply.choices[0].message.content == answer
    assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1]


def test_images_and_videos_take_their_places_in_one_prompt(vlm_engine, tmp_path):
    """A video and an image in one conversation: each is expanded where its placeholder is, by the model's
    processor; a Python caller may pass file paths."""
    clip = write_video(tmp_path / "clip.mp4", seed=1)
    picture = make_image(9, (56, 56))
    request = vlm_engine.chat_request([{"role": "user", "content": "Is <video> like <image>?"}], images=[picture],
                                      videos=[str(clip)])
    text = vlm_engine.tokenizer.decode(request.prompt_ids)
    assert ("user\nIs <|vision_start|>" + "<|video_pad|>" * 8 + "<|vision_end|> like <|vision_start|>"
            + "<|image_pad|>" * 4 + "<|vision_end|>?<|im_end|>") in text
    assert request.media.tensors["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert request.media.tensors["image_grid_thw"].tolist() == [[1, 4, 4]]
    pads = [vlm_engine.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")]
    types = [(t, k) for t, k in zip(request.prompt_ids, request.media.type_ids, strict=True) if k]
    assert types == [(pads[1], 2)] * 8 + [(pads[0], 1)] * 4  # mm_token_type_ids: 2 on video, 1 on image tokens
    both = vlm_engine.chat([{"role": "user", "content": "Is <video> like <image>?"}], images=[picture],
                           videos=[str(clip)])[0].text
    assert both == vlm_engine.chat([{"role": "user", "content": "Is <video> like <image>?"}], images=[picture],
                                   videos=[clip.read_bytes()])[0].text
    with pytest.raises(RequestError, match="could not be read"):
        vlm_engine.chat([{"role": "user", "content": "Hi"}], videos=[str(tmp_path / "missing.mp4")])
    with pytest.raises(RequestError, match=r"1 <video> placeholder\(s\) but 2 videos"):
        vlm_engine.chat_request([{"role": "user", "content": "<video>"}], videos=[str(clip), str(clip)])


def test_video_and_audio_sources_are_policed(tmp_path, monkeypatch):
    from lf_serve.limits import MAX_AUDIO_SECONDS

    allowed = tmp_path / "media"
    allowed.mkdir()
    write_video(allowed / "clip.mp4")
    (allowed / "tone.wav").write_bytes(wav_bytes(0.5))
    (allowed / "fake.mp4").write_bytes(b"not a video")
    policy = MediaPolicy(media_dir=str(allowed))
    clip = read_media("videos", "clip.mp4", policy)
    assert (clip.size, clip.frames, clip.seconds) == ((56, 56), 8, 2.0)
    tone = read_media("audios", "data:audio/wav;base64," + base64.b64encode(wav_bytes(0.5)).decode(), policy)
    assert (tone.frames, tone.seconds) == (8000, 0.5)
    assert read_media("audios", "tone.wav", policy).data == tone.data
    for kind, ref, message in [
            ("videos", "fake.mp4", "not a readable video"), ("videos", "missing.mp4", "does not exist"),
            ("videos", "../clip.mp4", "outside the server's image_dir"), ("audios", "clip.mp4", "not a readable sound"),
            ("videos", "http://127.0.0.1:9/x.mp4", "does not fetch video URLs"),
            ("audios", "data:audio/wav,raw", "must be base64 encoded")]:
        with pytest.raises(RequestError, match=message):
            read_media(kind, ref, policy)
    with pytest.raises(RequestError, match=r"56x56 = 3136 pixels a frame, over this server's limit of 3000"):
        read_media("videos", "clip.mp4", MediaPolicy(media_dir=str(allowed), max_pixels=3000))
    monkeypatch.setattr("lf_serve.media_sources.MAX_VIDEO_DECODED_PIXELS", 8 * 56 * 56 - 1)  # counted, not decoded
    with pytest.raises(RequestError, match=r"has 8 frames of 56x56, over this server's limit of 25087 decoded"):
        read_media("videos", "clip.mp4", policy)
    monkeypatch.undo()
    with pytest.raises(RequestError, match=r"larger than 1000 bytes \(video_max_bytes\)"):
        read_media("videos", "clip.mp4", MediaPolicy(media_dir=str(allowed), video_max_bytes=1000))
    with pytest.raises(RequestError, match=r"larger than 1000 bytes \(audio_max_bytes\)"):
        read_media("audios", "tone.wav", MediaPolicy(media_dir=str(allowed), audio_max_bytes=1000))
    long = wav_bytes(MAX_AUDIO_SECONDS + 1, rate=8000)
    with pytest.raises(RequestError, match=f"lasts 601 s, over this server's limit of {MAX_AUDIO_SECONDS:.0f} s"):
        read_media("audios", "data:audio/wav;base64," + base64.b64encode(long).decode(), policy)


def test_batched_media_tensors_are_left_padded_with_their_rows():
    """generate_inputs: the items' tensors of a left-padded batch, in row order; the token types and a
    cross_attention_mask (Llama 3.2 Vision: it runs along the prompt, and generate reads it from the end)
    move right with their row's ids, the mask cut from its padded length to the prompt's."""
    import torch

    from lf_serve.multimodal import RequestMedia, generate_inputs

    def mask(start: int, tiles: int) -> torch.Tensor:  # an image at `start`, padded to 64 positions as in training
        out = torch.zeros(1, 64, 1, 2, dtype=torch.long)
        out[0, start:, 0, :tiles] = 1
        return out

    rows = [RequestMedia(tensors={"pixel_values": torch.ones(1, 3), "cross_attention_mask": mask(1, 2)},
                         type_ids=[0, 1, 0]),
            RequestMedia(tensors={"pixel_values": torch.full((2, 3), 2.0), "cross_attention_mask": mask(3, 1)},
                         type_ids=[0, 0, 0, 1, 0])]
    ids = torch.zeros(2, 5, dtype=torch.long)
    out = generate_inputs(rows, "mm_token_type_ids", ids, [3, 5], "cpu", torch.float64)
    assert out["pixel_values"].tolist() == [[1.0] * 3, [2.0] * 3, [2.0] * 3] and out["pixel_values"].dtype == torch.float64
    assert out["mm_token_type_ids"].tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 1, 0]]
    assert out["cross_attention_mask"][:, :, 0].tolist() == [[[0, 0], [0, 0], [0, 0], [1, 1], [1, 1]],
                                                            [[0, 0], [0, 0], [0, 0], [1, 0], [1, 0]]]
