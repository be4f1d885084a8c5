"""`lf train` on Gemma 3, PaliGemma, Idefics3, InternVL and Mistral 3 (Pixtral) with LlamaFactory-format
image data: each family is a tiny random model with its own processor class, and for each the row's
pixels reach the vision encoder, only the language model is adapted, every media token is masked and
the trained folder loads with AutoProcessor."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mm_helpers import COLOURS, write_image_dataset
from train_helpers import losses

from lf_data.cli import main as lf
from lf_models.families import FAMILIES

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, max_position_embeddings=512, initializer_range=0.2)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _tokenizer(base: Path, tokens: list[str], named: dict[str, str] | None = None, **special: str):
    """The tiny tokenizer plus the family's special tokens (`named`: those its processor reads by name,
    as tokenizer.boi_token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, extra_special_tokens=named or {}, **special)
    tokenizer.add_tokens(list(dict.fromkeys([*special.values(), *tokens, *(named or {}).values()])),
                         special_tokens=True)
    return tokenizer


def _text(tokenizer, **extra) -> dict:
    return dict(TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra)


def _save(path: Path, model_class, config, tokenizer, processor) -> None:
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)


def build_gemma3(path: Path, base: Path) -> None:
    """28x28 pixels, 2x2 patches pooled to 4 <image_soft_token>s an image."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer(base, ["<start_of_turn>", "<end_of_turn>"], named, bos_token="<bos>")
    config = Gemma3Config(text_config=_text(tok, sliding_window=64), vision_config=dict(VISION, image_size=28, patch_size=14),
                          mm_tokens_per_image=4, boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
                          image_token_index=tok.image_token_id, tie_word_embeddings=False, initializer_range=0.2)
    images = Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    _save(path, Gemma3ForConditionalGeneration, config, tok, Gemma3Processor(images, tok, image_seq_length=4))


def build_paligemma(path: Path, base: Path) -> None:
    """PaliGemma 2 (a Gemma 2 decoder): 28x28 pixels, 4 <image> tokens an image."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = _tokenizer(base, ["<image>"], bos_token="<bos>", eos_token="<eos>")
    tok.add_tokens(EXTRA_TOKENS)  # the <locNNNN>/<segNNN> tokens its processor adds
    config = PaliGemmaConfig(text_config=_text(tok, model_type="gemma2"),
                             vision_config=dict(VISION, image_size=28, patch_size=14, projection_dim=32),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32, hidden_size=32,
                             vocab_size=len(tok), tie_word_embeddings=False)
    images = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    images.image_seq_length = 4
    _save(path, PaliGemmaForConditionalGeneration, config, tok, PaliGemmaProcessor(images, tok))


def build_idefics3(path: Path, base: Path) -> None:
    """Images resized to a longest edge of 56 and split into 28x28 crops plus a global view; one
    <image> token a crop (2x2 patches, pixel shuffle 2)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok = _tokenizer(base, ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *grid])
    config = Idefics3Config(text_config=_text(tok, model_type="llama"), vision_config=dict(VISION, image_size=28, patch_size=14),
                            scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"))
    images = Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28})
    _save(path, Idefics3ForConditionalGeneration, config, tok, Idefics3Processor(images, tok, image_seq_len=1))


def build_internvl(path: Path, base: Path) -> None:
    """InternVL 3 (a Qwen2 decoder): 28x28 tiles (1 to 4, plus a thumbnail), one <IMG_CONTEXT> a tile."""
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer(base, [], named)
    config = InternVLConfig(text_config=_text(tok, model_type="qwen2"), vision_config=dict(VISION, image_size=28, patch_size=14),
                            image_token_id=tok.context_image_token_id, image_seq_length=1, tie_word_embeddings=False)
    images = GotOcr2ImageProcessorPil(size={"height": 28, "width": 28}, crop_to_patches=True, min_patches=1, max_patches=4)
    processor = InternVLProcessor(images, tok, InternVLVideoProcessor(size={"height": 28, "width": 28}), image_seq_length=1)
    _save(path, InternVLForConditionalGeneration, config, tok, processor)


def build_mistral3(path: Path, base: Path) -> None:
    """Mistral 3 with its Pixtral encoder: 14-pixel patches merged 2x2, so a row of [IMG]s per 28 pixels."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralProcessor
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    tok = _tokenizer(base, ["[IMG]", "[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
                            "[/SYSTEM_PROMPT]"])
    config = Mistral3Config(text_config=_text(tok, model_type="mistral"),
                            vision_config=dict(VISION, image_size=112, patch_size=14, head_dim=8),
                            image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2,
                            tie_word_embeddings=False)
    images = PixtralImageProcessorPil(size={"longest_edge": 112}, patch_size=28)
    _save(path, Mistral3ForConditionalGeneration, config, tok,
          PixtralProcessor(images, tok, patch_size=14, spatial_merge_size=2))


def build_llava_pixtral(path: Path, base: Path) -> None:
    """Pixtral 12B's layout (model_type llava with a Pixtral encoder and processor): no patch merging, 14-pixel
    patches, images within 56 pixels."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, PixtralProcessor
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    tok = _tokenizer(base, ["[IMG]", "[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]"])
    config = LlavaConfig(text_config=_text(tok, model_type="mistral"),
                         vision_config=dict(VISION, model_type="pixtral", image_size=56, patch_size=14, head_dim=8),
                         image_token_index=tok.convert_tokens_to_ids("[IMG]"), vision_feature_layer=-1,
                         vision_feature_select_strategy="full", tie_word_embeddings=False)
    images = PixtralImageProcessorPil(size={"longest_edge": 56}, patch_size=14)
    _save(path, LlavaForConditionalGeneration, config, tok, PixtralProcessor(images, tok, patch_size=14))


def build_mllama(path: Path, base: Path) -> None:
    """Llama 3.2 Vision: 28x28 tiles, at most 2 an image; one cross-attention layer of two."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tok = _tokenizer(base, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|image|>", "<|python_tag|>"],
                     bos_token="<|begin_of_text|>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                  image_size=28, patch_size=14, max_num_tiles=2, intermediate_layers_indices=[0],
                  vision_output_dim=64, supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    text = {k: v for k, v in _text(tok, cross_attention_layers=[1]).items() if k != "head_dim"}
    config = MllamaConfig(text_config=text, vision_config=vision, image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    images = MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=2)
    _save(path, MllamaForConditionalGeneration, config, tok, MllamaProcessor(images, tok))


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Path], None]
    template: str
    processor: str
    image_token: str
    """The token the processor repeats for an image's features."""
    image_tokens: tuple[int, ...]
    """How many of them each of the five mllm_demo rows holds."""
    pixel_rows: int
    """Rows of pixels (images, crops or tiles) the vision tower gets for one batch of the five rows."""
    real_rows: int
    """Those of them that are not padding (Llama 3.2 Vision pads each row to 2 images of 2 tiles)."""
    answer_end: str
    """What the template writes after an answer (trained with it)."""
    answer_start: str = ""
    """What the template writes before an answer (Idefics3's space after `Assistant:`)."""


CASES = {
    "gemma3": Case(build_gemma3, "gemma3", "Gemma3Processor", "<image_soft_token>", (4, 4, 4, 4, 8), 6, 6,
                   "<end_of_turn>\n"),
    "paligemma": Case(build_paligemma, "paligemma", "PaliGemmaProcessor", "<image>", (4, 4, 4, 4, 8), 6, 6, "<eos>"),
    "idefics3": Case(build_idefics3, "idefics3", "Idefics3Processor", "<image>", (5, 5, 5, 5, 10), 30, 30,
                     "<end_of_utterance>\n", " "),
    "internvl": Case(build_internvl, "intern_vl", "InternVLProcessor", "<IMG_CONTEXT>", (3, 5, 5, 5, 8), 26, 26,
                     "<|im_end|>\n"),
    "mistral3": Case(build_mistral3, "mistral_small", "PixtralProcessor", "[IMG]", (6, 9, 9, 12, 15), 6, 6, "<|im_end|>"),
    # Pixtral 12B: the llava family, whose PixtralProcessor takes [IMG] as the marker (lf_models.media)
    "llava_pixtral": Case(build_llava_pixtral, "pixtral", "PixtralProcessor", "[IMG]", (12, 16, 16, 16, 28), 6, 6,
                          "<|im_end|>"),
    "mllama": Case(build_mllama, "mllama", "MllamaProcessor", "<|image|>", (1, 1, 1, 1, 2), 20, 11, "<|eot_id|>"),
}


FAMILY = {"llava_pixtral": "llava"}
"""The family of a case named otherwise."""


@pytest.fixture(scope="module")
def family_folder(tmp_path_factory, tiny_tokenizer_dir):
    """name -> a tiny random model folder of that family with its processor (built once per module)."""
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            cache[name] = tmp_path_factory.mktemp(f"tiny-{name}")
            CASES[name].build(cache[name], tiny_tokenizer_dir)
        return cache[name]

    return make


def pixels_of(folder: Path, name: str, files: list[Path]) -> list:
    """Each file's pixel rows (image, crops or tiles) as the family's processor makes them from the file
    alone, outside lf: what the vision tower must see for it."""
    from PIL import Image
    from transformers import AutoProcessor

    from lf_models.families import FAMILIES
    from lf_models.media import MediaInputs

    processor = AutoProcessor.from_pretrained(folder)
    marker = MediaInputs(processor, processor.tokenizer, FAMILIES[FAMILY.get(name, name)].markers).markers["images"]
    out = []
    for file in files:
        with Image.open(file) as image:
            pixels = processor(text=[marker], images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        out.append(pixels.reshape(-1, *pixels.shape[-3:]))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_lf_train_feeds_each_image_to_the_vision_tower(name, family_folder, data_dir, write_config, monkeypatch,
                                                      tmp_path):
    import torch

    import lf_train.run
    from lf_models.families import FAMILIES

    case, family, folder = CASES[name], FAMILIES[FAMILY.get(name, name)], family_folder(name)
    mllm = write_image_dataset(data_dir)
    seen = []  # the pixels the vision tower got, per call

    def record(module, args, kwargs):
        seen.append(kwargs.get("pixel_values", args[0] if args else None).detach().clone())

    def hooked(*args, **kwargs):
        model = load(*args, **kwargs)
        tower = next(m for n, m in model.named_modules() if n.endswith(family.towers["vision_tower"][0]))
        tower.register_forward_pre_hook(record, with_kwargs=True)
        return model

    load = lf_train.run.load_model
    monkeypatch.setattr(lf_train.run, "load_model", hooked)
    config = {"model_name_or_path": str(folder), "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
              "dataset": "mllm_demo", "dataset_dir": str(mllm), "template": case.template, "cutoff_len": 512,
              "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 5, "max_steps": 2,
              "learning_rate": 1.0e-2, "logging_steps": 1, "seed": 0, "report_to": "none", "plot_loss": False}
    assert lf(["train", str(write_config(**config))]) == 0
    out = tmp_path / "out"

    # one batch of all five rows a step: six images (the last row has two), each one's own pixels
    rows = json.loads((mllm / "mllm_demo.json").read_text())
    files = [mllm / f for row in rows for f in row["images"]]
    expected = pixels_of(folder, name, files)
    assert len(seen) == 2
    for pixels in seen:
        pixels = pixels.reshape(-1, *pixels.shape[-3:])
        assert pixels.shape[0] == case.pixel_rows
        for image in expected:  # every pixel row of every image, in some row of the batch (rows are shuffled)
            for part in image:
                h, w = part.shape[-2:]  # Pixtral pads a batch's images to the largest
                assert any(torch.equal(row[:, :h, :w], part) for row in pixels)
    assert len(losses(out)) == 2

    from safetensors.torch import load_file

    adapted = list(load_file(out / "adapter_model.safetensors"))
    encoder = family.towers["vision_tower"] + family.towers["projector"]
    assert adapted and not [k for k in adapted if any(f".{path}." in k for path in encoder)]
    assert all(f".{family.towers['language_model'][0]}.layers." in k for k in adapted)
    from transformers import AutoProcessor

    assert type(AutoProcessor.from_pretrained(out)).__name__ == case.processor  # the trained folder's processor


@pytest.mark.parametrize("name", list(CASES))
def test_media_tokens_and_the_prompt_are_never_trained(name, family_folder, data_dir):
    from transformers import AutoTokenizer

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.families import FAMILIES
    from lf_models.media import MediaLimits, load_media_inputs
    from lf_train.collators import MediaCollator, SupervisedCollator

    case, folder = CASES[name], family_folder(name)
    mllm = write_image_dataset(data_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    media = load_media_inputs(str(folder), tokenizer, FAMILIES[FAMILY.get(name, name)].markers, MediaLimits())
    data = build_dataset(DataArguments(dataset=["mllm_demo"], dataset_dir=str(mllm), template=case.template,
                                       cutoff_len=512), tokenizer, "sft", media_markers=media.markers)
    rows = [data.train_dataset[i] for i in range(len(data.train_dataset))]
    batch = MediaCollator(SupervisedCollator(tokenizer.pad_token_id), media)(rows)
    image = tokenizer.convert_tokens_to_ids(case.image_token)
    answers = [answer for _, answer in COLOURS] + ["No."]
    for i in range(len(rows)):
        length = int(batch["attention_mask"][i].sum())
        ids, labels = batch["input_ids"][i, :length].tolist(), batch["labels"][i, :length].tolist()
        assert ids.count(image) == case.image_tokens[i]
        trained = [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert tokenizer.decode(trained) == case.answer_start + answers[i] + case.answer_end  # no media, no prompt
        if name == "gemma3":  # each image's soft tokens attend to each other (token type 1)
            assert batch["token_type_ids"][i, :length].tolist() == [int(t == image) for t in ids]
        if name == "paligemma":  # images, bos, prompt: the prefix (type 0); the answer: the suffix (type 1)
            images = case.image_tokens[i]
            assert ids[:images] == [image] * images and ids[images] == tokenizer.bos_token_id
            assert image not in ids[images:]
            first = next(j for j, label in enumerate(labels) if label != -100)
            assert batch["token_type_ids"][i, :length].tolist() == [0] * first + [1] * (length - first)
        if name == "mllama":  # from its <|image|> on (to the next one's), a token sees that image's real tiles
            starts = [j for j, t in enumerate(ids) if t == image]
            tiles = batch["aspect_ratio_mask"][i].sum(-1).tolist()
            for j in range(length):
                current = max((n for n, start in enumerate(starts) if start <= j), default=None)
                assert batch["cross_attention_mask"][i, j].tolist() == [
                    [int(n == current and k < tiles[n]) for k in range(2)] for n in range(2)]
    if name == "mllama":
        assert batch["aspect_ratio_mask"].sum(-1).tolist() == [[2, 0], [2, 0], [1, 0], [2, 0], [2, 2]]
        assert batch["cross_attention_mask"].shape[1] == 64 >= batch["input_ids"].shape[1]  # the model cuts it
        text_row = {"input_ids": [1, 2, 3], "labels": [1, 2, 3], "images": None}
        collate = MediaCollator(SupervisedCollator(tokenizer.pad_token_id), media)
        assert "pixel_values" not in collate([text_row]) and "cross_attention_mask" not in collate([text_row])
        mixed = collate([text_row, rows[0]])
        assert mixed["pixel_values"].shape[:3] == (2, 1, 2) and not mixed["pixel_values"][0].any()
        assert not mixed["cross_attention_mask"][0].any() and mixed["cross_attention_mask"][1].any()
    pixels = batch["pixel_values"].flatten(0, -4)
    assert int((pixels.flatten(1).abs().sum(1) > 0).sum()) == case.real_rows  # padding is zeros


def test_gemma3_pan_and_scan_adds_crops_of_a_wide_image(family_folder, tmp_path):
    from mm_helpers import make_image
    from transformers import AutoTokenizer

    from lf_models.families import FAMILIES
    from lf_models.media import MediaLimits, load_media_inputs

    folder = family_folder("gemma3")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    wide = str(make_image(tmp_path / "wide.png", "red", (1024, 256)))
    soft = tokenizer.convert_tokens_to_ids("<image_soft_token>")
    for pan_and_scan, views in ((False, 1), (True, 5)):  # the whole image, then + 4 crops of 256x256
        media = load_media_inputs(str(folder), tokenizer, FAMILIES["gemma3"].markers,
                                  MediaLimits(image_do_pan_and_scan=pan_and_scan))
        ids, _, tensors = media.process("images", wide)
        assert tensors["pixel_values"].shape[0] == views and ids.count(soft) == 4 * views


@pytest.mark.parametrize("name", [name for name in CASES if FAMILIES[FAMILY.get(name, name)].packing == "neat"])
def test_neat_packed_examples_give_the_logits_they_give_alone(name, family_folder, data_dir):
    from mm_helpers import packed_and_alone

    results = packed_and_alone(family_folder(name), FAMILY.get(name, name), ["mllm_demo"],
                               write_image_dataset(data_dir), CASES[name].template)
    assert len(results) == 5
    for ids, difference in results:
        assert difference < 1e-4, (ids, difference)
