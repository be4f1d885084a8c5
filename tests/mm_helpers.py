"""Multimodal test data made here: images drawn with PIL, written as LlamaFactory's `mllm_demo` rows
(sharegpt messages with `<image>` placeholders and an `images` column)."""

import json
from pathlib import Path

COLOURS = [("red", "It is red."), ("blue", "It is blue."), ("green", "It is green."), ("yellow", "It is yellow.")]
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def make_image(path: Path, colour: str, size: tuple[int, int]) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] // 2, size[1] // 2), fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_image_dataset(folder: Path, name: str = "mllm_demo") -> Path:
    """Four one-image rows (images of different sizes) and one two-image row, plus dataset_info.json."""
    rows = []
    for i, (colour, answer) in enumerate(COLOURS):
        make_image(folder / "mllm_demo_data" / f"{i}.png", colour, (56 + 14 * i, 84))
        rows.append({"messages": [{"role": "user", "content": "<image>What colour is this?"},
                                  {"role": "assistant", "content": answer}],
                     "images": [f"mllm_demo_data/{i}.png"]})
    rows.append({"messages": [{"role": "user", "content": "Is <image> the same colour as <image>?"},
                              {"role": "assistant", "content": "No."}],
                 "images": ["mllm_demo_data/0.png", "mllm_demo_data/1.png"]})
    (folder / f"{name}.json").write_text(json.dumps(rows, indent=1))
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = {"file_name": f"{name}.json", "formatting": "sharegpt",
                  "columns": {"messages": "messages", "images": "images"}, "tags": SHAREGPT_TAGS}
    info_path.write_text(json.dumps(info, indent=2))
    return folder


# -- video and audio: LlamaFactory's mllm_video_demo / mllm_audio_demo, made by tools/make_mllm_demo.py ---
AUDIO_TOKENS = ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]


def demo_maker():
    """tools/make_mllm_demo.py as a module (tools/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "make_mllm_demo.py"
    spec = importlib.util.spec_from_file_location("make_mllm_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_demo_datasets(folder: Path, kinds: tuple[str, ...] = ("images", "videos", "audios")) -> Path:
    """The repository's demo datasets of `kinds`, written into `folder` and added to its dataset_info.json."""
    demo_maker().write_demos(folder, kinds)
    return folder


def build_tiny_qwen2_audio(path: Path, tokenizer_dir: Path) -> Path:
    """A tiny random Qwen2-Audio folder with its full processor: the tiny tokenizer plus the audio tokens,
    a 2-layer audio encoder and a Whisper feature extractor of 32 mel bins padding every clip to 2 s
    (200 feature frames, the encoder's 100 positions; a 1 s clip becomes 25 <|AUDIO|> tokens)."""
    import torch
    from transformers import (
        AutoTokenizer,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(AUDIO_TOKENS, special_tokens=True)
    text = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2, vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    audio = dict(model_type="qwen2_audio_encoder", d_model=32, encoder_layers=2, encoder_attention_heads=4,
                 encoder_ffn_dim=64, num_mel_bins=32, max_source_positions=100, initializer_range=0.2)
    config = Qwen2AudioConfig(audio_config=audio, text_config=text,
                              audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    features = WhisperFeatureExtractor(feature_size=32, sampling_rate=16000, chunk_length=2)
    Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(path)
    return path


OMNI_TOKENS = {"image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "audio_token": "<|AUDIO|>",
               "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
               "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}


def build_tiny_qwen2_5_omni_thinker(path: Path, tokenizer_dir: Path) -> Path:
    """A tiny random Qwen2.5-Omni thinker folder with its full processor (images, videos, audio): the tiny
    tokenizer with Omni's named media tokens, 2-layer vision and audio encoders of width 32, and a
    Whisper feature extractor of 32 mel bins padding clips to 2 s (as build_tiny_qwen2_audio)."""
    import torch
    from transformers import (
        AutoTokenizer,
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(list(OMNI_TOKENS.values()), special_tokens=True)
    tokenizer.save_pretrained(path)  # reloaded with the named tokens the processor reads (tokenizer.audio_token, ...)
    tokenizer = AutoTokenizer.from_pretrained(path, extra_special_tokens=OMNI_TOKENS)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in OMNI_TOKENS.items()}
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=512, initializer_range=0.2, vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                  initializer_range=0.2)
    audio = dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, num_mel_bins=32,
                 max_source_positions=100, n_window=50, output_dim=32, initializer_range=0.2)
    config = Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio, audio_token_index=ids["audio_token"],
        image_token_index=ids["image_token"], video_token_index=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], audio_end_token_id=ids["audio_eos_token"],
        vision_start_token_id=ids["vision_bos_token"], vision_end_token_id=ids["vision_eos_token"])
    torch.manual_seed(0)
    Qwen2_5OmniThinkerForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2)
    Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessorPil(**pixels), video_processor=Qwen2VLVideoProcessor(**pixels),
                         feature_extractor=WhisperFeatureExtractor(feature_size=32, sampling_rate=16000, chunk_length=2),
                         tokenizer=tokenizer).save_pretrained(path)
    return path


def collated_batch(model_dir: Path, family: str, dataset: str, dataset_dir: Path, template: str,
                   cutoff_len: int = 512):
    """(tokenizer, tokenised rows, the MediaCollator batch of all of them) for one demo dataset, as lf train
    builds them: the family's markers, the model folder's processor, the SFT collator."""
    from transformers import AutoTokenizer

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.families import FAMILIES
    from lf_models.media import MediaLimits, load_media_inputs
    from lf_train.collators import MediaCollator, SupervisedCollator

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    markers = FAMILIES[family].markers
    media = load_media_inputs(str(model_dir), tokenizer, markers, MediaLimits())
    data = build_dataset(DataArguments(dataset=[dataset], dataset_dir=str(dataset_dir), template=template,
                                       cutoff_len=cutoff_len), tokenizer, "sft", media_markers=dict(markers))
    rows = [data.train_dataset[i] for i in range(len(data.train_dataset))]
    return tokenizer, rows, MediaCollator(SupervisedCollator(tokenizer.pad_token_id), media)(rows)


def packed_and_alone(model_dir: Path, family: str, datasets: list[str], dataset_dir: Path, template: str,
                     load_class=None) -> list[tuple[list[int], float]]:
    """Neat packing with media, checked as lf train does it: every row of `datasets` packed into one
    sequence (their markers expanded example by example, M-RoPE positions from the model's own
    get_rope_index), against each row in a batch of its own. Per example: (its expanded ids, the
    largest logit difference between packed and alone)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.families import FAMILIES, model_class_for
    from lf_models.media import MediaLimits, load_media_inputs, rope_index_function
    from lf_train.collators import MediaCollator, SupervisedCollator, forward_inputs

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    markers = dict(FAMILIES[family].markers)
    media = load_media_inputs(str(model_dir), tokenizer, markers, MediaLimits())
    model_class = load_class or model_class_for(AutoConfig.from_pretrained(model_dir))
    model = model_class.from_pretrained(model_dir, dtype=torch.float32).eval()
    rope = rope_index_function(model) if FAMILIES[family].rope_index else None

    def rows(**options):
        data = build_dataset(DataArguments(dataset=datasets, dataset_dir=str(dataset_dir), template=template,
                                           cutoff_len=4096, **options), tokenizer, "sft", media_markers=markers)
        return [data.train_dataset[i] for i in range(len(data.train_dataset))]

    packed_rows, alone_rows = rows(neat_packing=True), rows()
    assert len(packed_rows) == 1 and len(alone_rows) > 1
    packed = MediaCollator(SupervisedCollator(tokenizer.pad_token_id, neat_packing=True), media, rope)(packed_rows)
    with torch.no_grad():
        logits = model(**forward_inputs(packed)).logits[0]
        mask = packed["attention_mask"][0, 0]
        starts = [i for i in range(mask.shape[0]) if i == 0 or not mask[i, i - 1]]
        ids = packed["input_ids"][0].tolist()
        segments = {tuple(ids[a:b]): logits[a:b] for a, b in zip(starts, starts[1:] + [len(ids)], strict=True)}
        out = []
        for row in alone_rows:
            batch = MediaCollator(SupervisedCollator(tokenizer.pad_token_id), media)([row])
            alone = model(**forward_inputs(batch)).logits[0]
            key = tuple(batch["input_ids"][0].tolist())
            out.append((list(key), float((segments[key] - alone).abs().max())))
    return out


def hook_modules(monkeypatch, hooks):
    """Patch lf train's model loading so that the module whose name ends with each key calls its hook."""
    import lf_train.run

    load = lf_train.run.load_model

    def hooked(*args, **kwargs):
        model = load(*args, **kwargs)
        modules = dict(model.named_modules())
        for suffix, record in hooks.items():
            module = next(m for name, m in modules.items() if name.endswith(suffix))
            module.register_forward_hook(record, with_kwargs=True)
        return model

    monkeypatch.setattr(lf_train.run, "load_model", hooked)
