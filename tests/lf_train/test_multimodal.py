"""`lf train` on LlamaFactory-format multimodal data (`images` column, `<image>` placeholders): the
pixels reach the vision tower, every media and prompt token is masked, and broken media or a model
that cannot take it stops the run before anything is written."""

import json

import pytest
from mm_helpers import write_image_dataset
from train_helpers import losses

from lf_data.cli import main as lf

IMAGE_PAD = "<|image_pad|>"


@pytest.fixture
def mllm_dir(data_dir):
    return write_image_dataset(data_dir)


@pytest.fixture
def vl_config(tiny_qwen2_vl, mllm_dir, tmp_path):
    return {"model_name_or_path": str(tiny_qwen2_vl), "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
            "dataset": "mllm_demo", "dataset_dir": str(mllm_dir), "template": "qwen2_vl", "cutoff_len": 256,
            "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 5, "max_steps": 2,
            "learning_rate": 1.0e-2, "logging_steps": 1, "seed": 0, "report_to": "none", "plot_loss": False}


def test_sft_lora_feeds_every_image_to_the_vision_tower(vl_config, write_config, monkeypatch, tmp_path, capsys):
    import lf_train.run

    seen = []  # (image_grid_thw rows, pixel rows) per call of the vision tower

    def record(module, args, kwargs, output):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        seen.append((grid.tolist(), (args[0] if args else kwargs["hidden_states"]).shape[0]))

    def hooked(*args, **kwargs):
        model = load(*args, **kwargs)
        visual = next(m for name, m in model.named_modules() if name.endswith("model.visual"))
        visual.register_forward_hook(record, with_kwargs=True)
        return model

    load = lf_train.run.load_model
    monkeypatch.setattr(lf_train.run, "load_model", hooked)
    assert lf(["train", str(write_config(**vl_config))]) == 0
    assert "model = AutoModelForImageTextToText.from_pretrained(" in capsys.readouterr().out  # the usage hint
    out = tmp_path / "out"
    # one batch of all five rows per step: six images (one row has two), each patch row of pixels seen
    assert len(seen) == 2
    for grids, pixel_rows in seen:
        assert len(grids) == 6 and pixel_rows == sum(t * h * w for t, h, w in grids) > 0
    run = losses(out)
    assert len(run) == 2 and run[1] < run[0]
    from safetensors.torch import load_file

    adapted = load_file(out / "adapter_model.safetensors")
    assert adapted and not any("visual" in key for key in adapted)  # the vision tower is not adapted
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(out)  # the trained folder carries the processor
    assert type(processor).__name__ == "Qwen2VLProcessor"
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                           add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>" in prompt  # LF's template


def test_media_tokens_and_the_prompt_are_never_trained(tiny_qwen2_vl, mllm_dir):
    from mm_helpers import COLOURS, collated_batch

    tokenizer, rows, batch = collated_batch(tiny_qwen2_vl, "qwen2_vl", "mllm_demo", mllm_dir, "qwen2_vl", 256)
    pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    grids = batch["image_grid_thw"].tolist()
    assert len(grids) == 6
    counts = iter(t * h * w // 4 for t, h, w in grids)  # merge_size 2: four patches per token
    answers = [answer for _, answer in COLOURS] + ["No."]
    for i, row in enumerate(rows):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids.count(pad) == sum(next(counts) for _ in json.loads(row["images"]))
        trained = [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert tokenizer.decode(trained) == answers[i] + "<|im_end|>\n"  # the answer alone, nothing before it
        assert batch["mm_token_type_ids"][i].tolist() == [int(t == pad) for t in ids]
    assert batch["pixel_values"].shape[0] == sum(t * h * w for t, h, w in grids)


def test_unreadable_image_stops_the_run_before_anything_is_written(vl_config, write_config, mllm_dir, tmp_path,
                                                                   capsys):
    (mllm_dir / "mllm_demo_data" / "2.png").write_bytes(b"not a png")
    assert lf(["train", str(write_config(**vl_config))]) != 0
    err = capsys.readouterr().err
    assert "media file(s) cannot be read" in err and "2.png" in err
    assert not (tmp_path / "out").exists()


def test_a_text_model_refuses_image_data(base_config, write_config, mllm_dir, tmp_path, capsys):
    base_config.update(dataset="mllm_demo", dataset_dir=str(mllm_dir))
    assert lf(["train", str(write_config(**base_config))]) != 0
    assert "would train on the placeholder text" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_data_check_shows_each_image_as_the_model_will_see_it(vl_config, write_config, capsys):
    assert lf(["data", "check", str(write_config(**vl_config))]) == 0
    out = capsys.readouterr().out
    # the first row's 56x84 image: 4x6 patches of 14 pixels, merged 2x2 -> 6 feature tokens
    assert "<|vision_start|><|image_pad|>×6<|vision_end|>What colour is this?" in out
    assert "⟦It is red.<|im_end|>" in out and "lengths count each image" in out
