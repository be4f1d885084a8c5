"""Neat packing with media: a packed example gives exactly the logits it gives alone (M-RoPE positions
example by example for the Qwen-VL families; the other families in test_multimodal_families_a/b), and a
family whose attention cannot be split per example is refused, with the reason, before weights load."""

import json

import pytest
from mm_helpers import (
    build_tiny_qwen2_audio,
    hook_modules,
    packed_and_alone,
    write_demo_datasets,
    write_image_dataset,
)
from train_helpers import losses

from lf_data.cli import main as lf


def test_qwen2_vl_packed_examples_see_only_themselves(tiny_qwen2_vl, data_dir):
    results = packed_and_alone(tiny_qwen2_vl, "qwen2_vl", ["mllm_demo"], write_image_dataset(data_dir), "qwen2_vl")
    assert len(results) == 5
    for ids, difference in results:
        assert difference < 1e-4, (ids, difference)


def test_qwen2_audio_packed_clips_see_only_their_example(tmp_path_factory, tiny_tokenizer_dir, data_dir):
    model = build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"), tiny_tokenizer_dir)
    results = packed_and_alone(model, "qwen2_audio", ["mllm_audio_demo"], write_demo_datasets(data_dir, ("audios",)),
                               "qwen2_audio")
    assert len(results) == 3
    for ids, difference in results:
        assert difference < 1e-4, (ids, difference)


def test_lf_train_neat_packs_images_with_3d_positions(tiny_qwen2_vl, data_dir, write_config, monkeypatch, tmp_path):
    seen = []  # per forward of the language model: the shape of its position_ids and its 4-D mask

    def record(module, args, kwargs, output):
        seen.append((tuple(kwargs["position_ids"].shape), tuple(kwargs["attention_mask"].shape)))

    hook_modules(monkeypatch, {"model.language_model": record})
    out = tmp_path / "out"
    config = {"model_name_or_path": str(tiny_qwen2_vl), "stage": "sft", "finetuning_type": "lora",
              "dataset": "mllm_demo", "dataset_dir": str(write_image_dataset(data_dir)), "template": "qwen2_vl",
              "cutoff_len": 1024, "neat_packing": True, "output_dir": str(out), "per_device_train_batch_size": 1,
              "max_steps": 2, "learning_rate": 1.0e-2, "logging_steps": 1, "seed": 0, "report_to": "none",
              "plot_loss": False}
    assert lf(["train", str(write_config(**config))]) == 0
    # the five rows are one packed sequence: M-RoPE positions (3, 1, length), a block-diagonal mask
    assert len(seen) == 2
    for positions, mask in seen:
        assert positions[:2] == (3, 1) and mask == (1, 1, positions[2], positions[2])
    run = losses(out)
    assert len(run) == 2 and run[1] < run[0]


def _config_only_model(folder, tokenizer_dir, config) -> str:
    """A model folder with a config.json and a tokenizer: enough for what lf train checks before weights load."""
    import shutil

    shutil.copytree(tokenizer_dir, folder)
    config.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(("model_type", "options", "message"), [
    ("paligemma", {"neat_packing": True}, "neat_packing with images is not possible for model_type paligemma: every "
                                          "image of a row goes before bos.*remove packing/neat_packing"),
    ("paligemma", {"packing": True}, "packing with images is not possible for model_type paligemma"),
    ("gemma3", {"neat_packing": True}, "model_type gemma3: an image's tokens attend both ways.*use packing: true "
                                       "without neat_packing"),
    ("mllama", {"neat_packing": True}, "model_type mllama: the cross_attention_mask"),
])
def test_packing_a_family_cannot_split_is_refused_before_weights_load(model_type, options, message, tiny_tokenizer_dir,
                                                                     data_dir, write_config, tmp_path, capsys):
    from transformers import AutoConfig

    model = _config_only_model(tmp_path / "model", tiny_tokenizer_dir, AutoConfig.for_model(model_type))
    config = {"model_name_or_path": model, "stage": "sft", "finetuning_type": "lora", "dataset": "mllm_demo",
              "dataset_dir": str(write_image_dataset(data_dir)), "template": "qwen2_vl", "output_dir": str(tmp_path / "o"),
              "report_to": "none", **options}
    assert lf(["train", str(write_config(**config))]) != 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "is not possible" in line]) == 1
    import re

    assert re.search(message, err), err[-2000:]
    assert not (tmp_path / "o").exists()


def test_plain_packing_with_media_is_one_sequence(tiny_qwen2_vl, data_dir):
    """Packed plainly, the examples see each other and the model numbers the row's positions itself."""
    from transformers import AutoTokenizer

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.families import FAMILIES
    from lf_models.media import MediaLimits, load_media_inputs
    from lf_train.collators import MediaCollator, SupervisedCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_vl)
    markers = dict(FAMILIES["qwen2_vl"].markers)
    data = build_dataset(DataArguments(dataset=["mllm_demo"], dataset_dir=str(write_image_dataset(data_dir)),
                                       template="qwen2_vl", cutoff_len=1024, packing=True), tokenizer, "sft",
                         media_markers=markers)
    (row,) = data.train_dataset
    assert len(json.loads(row["images"])) == 6
    batch = MediaCollator(SupervisedCollator(tokenizer.pad_token_id),
                          load_media_inputs(str(tiny_qwen2_vl), tokenizer, markers, MediaLimits()))([row])
    assert "position_ids" not in batch and batch["attention_mask"].tolist() == [[1] * batch["input_ids"].shape[1]]
    assert batch["image_grid_thw"].shape[0] == 6
    pads = int((batch["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert pads == int(batch["image_grid_thw"].prod(-1).sum()) // 4  # every image expanded (2x2 merge)
