"""`lf train` on LlamaFactory-format image and video data for Qwen2.5-VL, Qwen3-VL, LLaVA-1.5, LLaVA-NeXT
and LLaVA-NeXT-Video: a tiny random model of each with its real processor class. For each family the
vision tower runs on exactly the rows' pixels (a forward hook counts the patches, tiles or frames it
saw), the adapter holds language-model layers only, every media token and every prompt token is kept
out of the labels, and the trained folder loads with plain transformers' AutoProcessor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mm_helpers import COLOURS, SHAREGPT_TAGS, make_image, write_image_dataset
from train_helpers import losses

from lf_data.cli import main as lf
from lf_models.families import FAMILIES

QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_TOKENS = ["<image>", "<video>"]
MEDIA_TOKENS = {True: ["<|image_pad|>", "<|video_pad|>"], False: LLAVA_TOKENS}
"""The tokens that stand for image and video features (Qwen: True), beside the text around them."""
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, initializer_range=0.2)
CLIP = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, image_size=28, patch_size=14, projection_dim=32)
"""A 28x28 CLIP view: 2x2 patches plus CLS; the `default` feature strategy drops CLS, so 4 tokens a view."""
PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]
LLAVA_PROCESSOR = dict(patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)
WIDE_ANSWER = "It is purple."
VIDEO_ANSWERS = ["A red ball.", "It is blue.", "No."]

# -- tiny models ------------------------------------------------------------------------------------


def _tokenizer(tokenizer_dir: Path, tokens: list[str]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(tokens, special_tokens=True)
    return tokenizer


def _text(tokenizer, **extra) -> dict:
    return {**TEXT, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, **extra}


def _qwen(model_type: str, tokenizer_dir: Path):
    """Qwen2.5-VL: 14-pixel patches merged 2x2 (an image of 56..112 pixels a side is 4 to 16 tokens);
    Qwen3-VL: 16-pixel patches, one DeepStack layer, interleaved M-RoPE."""
    import transformers as hf

    tokenizer = _tokenizer(tokenizer_dir, QWEN_TOKENS)
    ids = dict(zip(["vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"],
                   tokenizer.convert_tokens_to_ids(QWEN_TOKENS), strict=True))
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=32, initializer_range=0.2)
    if model_type == "qwen2_5_vl":
        config = hf.Qwen2_5_VLConfig(text_config=_text(tokenizer, head_dim=8, rope_parameters=rope),
                                     vision_config={**vision, "patch_size": 14, "window_size": 56,
                                                    "fullatt_block_indexes": [1]},
                                     tie_word_embeddings=False, **ids)
        sizes = dict(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14)
        processor = hf.Qwen2_5_VLProcessor(image_processor=hf.Qwen2VLImageProcessor(**sizes, merge_size=2),
                                           video_processor=hf.Qwen2VLVideoProcessor(**sizes, merge_size=2),
                                           tokenizer=tokenizer)
        return config, processor
    config = hf.Qwen3VLConfig(text_config=_text(tokenizer, head_dim=8, rope_parameters={**rope, "mrope_interleaved": True}),
                              vision_config={**vision, "patch_size": 16, "num_position_embeddings": 64,
                                             "deepstack_visual_indexes": [1]},
                              tie_word_embeddings=False, **ids)
    sizes = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}, patch_size=16, merge_size=2)
    processor = hf.Qwen3VLProcessor(image_processor=hf.Qwen2VLImageProcessor(**sizes),
                                    video_processor=hf.Qwen3VLVideoProcessor(**sizes), tokenizer=tokenizer)
    return config, processor


def _llava(model_type: str, tokenizer_dir: Path):
    """28x28 CLIP views; LLaVA-NeXT tiles an image on a grid of up to 2x2 views (plus the base view)."""
    import transformers as hf

    tokenizer = _tokenizer(tokenizer_dir, LLAVA_TOKENS)
    image, video = tokenizer.convert_tokens_to_ids(LLAVA_TOKENS)
    views = dict(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    common = dict(text_config=_text(tokenizer, model_type="llama"), vision_config=CLIP, image_token_id=image,
                  image_seq_length=4)
    if model_type == "llava":
        return (hf.LlavaConfig(**common),
                hf.LlavaProcessor(image_processor=hf.CLIPImageProcessor(**views), tokenizer=tokenizer, **LLAVA_PROCESSOR))
    tiles = hf.LlavaNextImageProcessor(**views, image_grid_pinpoints=PINPOINTS)
    if model_type == "llava_next":
        return (hf.LlavaNextConfig(**common, image_grid_pinpoints=PINPOINTS),
                hf.LlavaNextProcessor(image_processor=tiles, tokenizer=tokenizer, **LLAVA_PROCESSOR))
    return (hf.LlavaNextVideoConfig(**common, image_grid_pinpoints=PINPOINTS, video_token_id=video, video_seq_length=1,
                                    spatial_pool_stride=2),
            hf.LlavaNextVideoProcessor(image_processor=tiles, video_processor=hf.LlavaNextVideoVideoProcessor(**views),
                                       tokenizer=tokenizer, **LLAVA_PROCESSOR))


def build_family_model(model_type: str, path: Path, tokenizer_dir: Path) -> Path:
    """A tiny random model of `model_type` with its full processor (the tiny tokenizer plus the
    family's special tokens), saved as a model folder."""
    import torch
    import transformers

    config, processor = (_qwen if model_type.startswith("qwen") else _llava)(model_type, tokenizer_dir)
    torch.manual_seed(0)
    getattr(transformers, FAMILIES[model_type].architectures[0])(config).save_pretrained(path)
    processor.tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# -- data: the image rows of mm_helpers, plus videos encoded here ------------------------------------


def write_video(path: Path, colour: tuple[int, int, int], frames: int, fps: int = 4) -> Path:
    """A 56x56 clip of `frames` frames at `fps`: a square of `colour` moving right on grey."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = 56
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.full((56, 56, 3), 128, dtype=np.uint8)
            pixels[20:36, 4 + 8 * i:20 + 8 * i] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def _add_dataset(folder: Path, name: str, rows: list[dict], columns: tuple[str, ...]) -> None:
    (folder / f"{name}.json").write_text(json.dumps(rows))
    info = json.loads((folder / "dataset_info.json").read_text())
    info[name] = {"file_name": f"{name}.json", "formatting": "sharegpt", "tags": SHAREGPT_TAGS,
                  "columns": {"messages": "messages", **{kind: kind for kind in columns}}}
    (folder / "dataset_info.json").write_text(json.dumps(info))


def _row(prompt: str, answer: str, **media: list[str]) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            **{kind: [f"mllm_demo_data/{name}" for name in names] for kind, names in media.items()}}


def write_extra_datasets(folder: Path) -> Path:
    """`mllm_wide`: one 112x28 image (LLaVA-NeXT tiles it 1x2, the others 2x2: the batch zero-pads its
    tiles); `mllm_video_mix`: a 1 s clip (2 frames at video_fps 2), a 1.5 s clip (3 frames), and a row
    with the wide image and the 1.5 s clip."""
    make_image(folder / "mllm_demo_data" / "wide.png", "purple", (112, 28))
    _add_dataset(folder, "mllm_wide", [_row("<image>What colour is this strip?", WIDE_ANSWER, images=["wide.png"])],
                 ("images",))
    write_video(folder / "mllm_demo_data" / "a.mp4", (220, 20, 20), 4)
    write_video(folder / "mllm_demo_data" / "b.mp4", (20, 40, 220), 6)
    rows = [_row("<video>What moves in this clip?", VIDEO_ANSWERS[0], videos=["a.mp4"], images=[]),
            _row("What colour is <video>?", VIDEO_ANSWERS[1], videos=["b.mp4"], images=[]),
            _row("Is <image> the colour of <video>?", VIDEO_ANSWERS[2], videos=["b.mp4"], images=["wide.png"])]
    _add_dataset(folder, "mllm_video_mix", rows, ("images", "videos"))
    return folder


# -- what each family must show ----------------------------------------------------------------------
# template: LlamaFactory's name; processor: its class; end: what follows an answer in the labels; seen:
# per step, the rows of pixels the vision tower took in each call (images, then videos) and, for the Qwen
# towers, the number of items (grids); media_tokens: the image/video tokens of the whole batch.
# Images: 56/70/84/98 x 84 pixels, 0 and 1 again (mm_demo), the 112x28 strip (twice with videos).
# Videos: 56x56 at 4 fps, sampled at video_fps 2 to 2 and 3 frames; the 3-frame clip twice.
CASES = {
    # 14-pixel patches on sides rounded to 28: 4x6, 4x6 (70 -> 56), 6x6, 8x6 (98 -> 112), 4x6, 4x6, strip 8x2
    # (+ 8x2) = 212 rows; 2 frames a time step (3 frames pad to 4): 16 + 32 + 32; 4 rows a token
    "qwen2_5_vl": dict(template="qwen2_vl", processor="Qwen2_5_VLProcessor", end="<|im_end|>\n",
                       seen=[(212, 8), (80, 3)], media_tokens=(212 + 80) // 4),
    # 16-pixel patches on sides rounded to 32 (at least 64x64): 4x6, 4x6, 6x6, 6x6 (98 -> 96), 4x6, 4x6,
    # strip 128x32 = 8x2 (+ 8x2) = 200; frames 64x64: 16 rows per 2 frames
    "qwen3_vl": dict(template="qwen3_vl_nothink", processor="Qwen3VLProcessor", end="<|im_end|>\n",
                     seen=[(200, 8), (80, 3)], media_tokens=(200 + 80) // 4),
    # one 28x28 view per image, 4 tokens each
    "llava": dict(template="llava", processor="LlavaProcessor", end="<|im_end|>", seen=[(7, None)],
                  media_tokens=7 * 4),
    # AnyRes: the 84-pixel-high images are a base view + 2x2 tiles (5 views), the strip base + 1x2 (3 views,
    # zero-padded to 5 in the batch; the padding never reaches the tower). Tokens: the base view's 4, the
    # tiles' 4x4 features cut to the image's aspect, a newline per feature row: 16 for 56x84, 24 for the
    # other 84-high images, 14 for the strip
    "llava_next": dict(template="llava_next", processor="LlavaNextProcessor", end="<|im_end|>", seen=[(33, None)],
                       media_tokens=16 + 24 + 24 + 24 + 16 + 24 + 14),
    # and a frame is 1 token (2x2 patches pooled by 2): 2 + 3 + 3 frames, joined into one row
    "llava_next_video": dict(template="llava_next_video", processor="LlavaNextVideoProcessor", end="<|im_end|>",
                             seen=[(36, None), (8, None)], media_tokens=16 + 24 + 24 + 24 + 16 + 24 + 14 * 2 + 8),
}
VIDEO_FAMILIES = [name for name in CASES if "videos" in FAMILIES[name].markers]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory, tiny_tokenizer_dir):
    cache: dict[str, Path] = {}

    def make(model_type: str) -> Path:
        if model_type not in cache:
            cache[model_type] = build_family_model(model_type, tmp_path_factory.mktemp(model_type), tiny_tokenizer_dir)
        return cache[model_type]

    return make


@pytest.fixture
def mm_data(data_dir):
    return write_extra_datasets(write_image_dataset(data_dir))


def datasets(model_type: str) -> list[str]:
    return ["mllm_demo", "mllm_wide"] + (["mllm_video_mix"] if model_type in VIDEO_FAMILIES else [])


def answers(model_type: str) -> list[str]:
    return [answer for _, answer in COLOURS] + ["No.", WIDE_ANSWER] + (VIDEO_ANSWERS if model_type in VIDEO_FAMILIES else [])


# -- the tests ---------------------------------------------------------------------------------------


def test_families_are_registered_with_llamafactory_templates(family_models):
    from lf_data.templates.registry import TEMPLATES
    from lf_models.default_template import default_template

    for name in ("qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "llava", "llava_next", "llava_next_video"):
        assert name in TEMPLATES, name
    for model_type, case in CASES.items():
        family = FAMILIES[model_type]
        assert family.vlm and family.template == case["template"]
        assert set(family.media) == ({"images", "videos"} if model_type in VIDEO_FAMILIES else {"images"})
        assert set(family.towers) == {"vision_tower", "projector", "language_model"}
        # a folder without a chat template of its own gets the family's template
        assert default_template(str(family_models(model_type))) == case["template"]


@pytest.mark.parametrize("model_type", list(CASES))
def test_sft_lora_feeds_the_rows_pixels_to_the_vision_tower(model_type, family_models, mm_data, write_config,
                                                            monkeypatch, tmp_path):
    import lf_train.run

    case, family = CASES[model_type], FAMILIES[model_type]
    tower = family.towers["vision_tower"][0]
    seen: list[tuple[int, int | None]] = []  # per call of the vision tower: (rows of pixels, items)

    def record(module, args, kwargs, output):
        pixels = args[0] if args else kwargs.get("hidden_states", kwargs.get("pixel_values"))
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        seen.append((pixels.shape[0], None if grid is None else len(grid)))

    def hooked(*args, **kwargs):
        model = load(*args, **kwargs)
        visual = next(m for name, m in model.named_modules() if name == tower or name.endswith("." + tower))
        visual.register_forward_hook(record, with_kwargs=True)
        return model

    load = lf_train.run.load_model
    monkeypatch.setattr(lf_train.run, "load_model", hooked)
    rows = len(answers(model_type))
    config = {"model_name_or_path": str(family_models(model_type)), "stage": "sft", "finetuning_type": "lora",
              "lora_target": "all", "dataset": ",".join(datasets(model_type)), "dataset_dir": str(mm_data),
              "template": case["template"], "cutoff_len": 256, "output_dir": str(tmp_path / "out"),
              "per_device_train_batch_size": rows, "max_steps": 2, "learning_rate": 1.0e-2, "logging_steps": 1,
              "seed": 0, "report_to": "none", "plot_loss": False, "disable_tqdm": True}
    assert lf(["train", str(write_config(**config))]) == 0
    out = tmp_path / "out"
    assert seen == case["seen"] * 2  # one batch of every row per step: every item, nothing else
    run = losses(out)
    assert len(run) == 2 and run[1] < run[0]
    from safetensors.torch import load_file

    adapted = [key.removeprefix("base_model.model.") for key in load_file(out / "adapter_model.safetensors")]
    # lora_A and lora_B of q/k/v/o/gate/up/down in both decoder layers: the language model only
    assert len(adapted) == 2 * 7 * 2 and all(key.startswith(family.layers + ".") for key in adapted)
    from transformers import AutoProcessor

    assert type(AutoProcessor.from_pretrained(out)).__name__ == case["processor"]


@pytest.mark.parametrize("model_type", list(CASES))
def test_media_tokens_and_the_prompt_are_never_trained(model_type, family_models, mm_data):
    from transformers import AutoTokenizer

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.media import MediaLimits, load_media_inputs
    from lf_train.collators import MediaCollator, SupervisedCollator

    case, family = CASES[model_type], FAMILIES[model_type]
    folder = family_models(model_type)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    media = load_media_inputs(str(folder), tokenizer, family.markers, MediaLimits())
    data = build_dataset(DataArguments(dataset=datasets(model_type), dataset_dir=str(mm_data),
                                       template=case["template"], cutoff_len=256),
                         tokenizer, "sft", media_markers=dict(family.markers))
    rows = [data.train_dataset[i] for i in range(len(data.train_dataset))]
    batch = MediaCollator(SupervisedCollator(tokenizer.pad_token_id), media)(rows)
    special = set(tokenizer.convert_tokens_to_ids(MEDIA_TOKENS[model_type.startswith("qwen")]))
    media_tokens = 0
    for i, answer in enumerate(answers(model_type)):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        trained = [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert tokenizer.decode(trained) == answer + case["end"]  # the answer alone: no media, no prompt token
        media_tokens += sum(1 for t in ids if t in special)
    assert media_tokens == case["media_tokens"]


@pytest.mark.parametrize("model_type", list(CASES))
def test_neat_packed_examples_give_the_logits_they_give_alone(model_type, family_models, mm_data):
    from mm_helpers import packed_and_alone

    results = packed_and_alone(family_models(model_type), model_type, datasets(model_type), mm_data,
                               CASES[model_type]["template"])
    assert len(results) == len(answers(model_type))  # every image and video row, packed into one sequence
    for ids, difference in results:
        assert difference < 1e-4, (ids, difference)
