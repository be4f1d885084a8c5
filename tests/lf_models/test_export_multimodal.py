"""`lf export` of a Qwen2-VL LoRA run: the merged folder carries the processor and a chat template that
writes image message parts as Qwen2-VL's own tokens, so plain transformers (AutoModelForImageTextToText +
AutoProcessor, no LF, no peft) gives the logits of the base model with the adapter applied in peft."""

from __future__ import annotations

import json

import pytest
import torch

from lf_data.cli import main as lf

IMAGE_PROMPT = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def vl_run(tiny_qwen2_vl, tmp_path_factory):
    """Two LoRA steps on the mllm_demo rows, with LoRA on every tower (vision tower and projector too),
    so the merge has to reach all of them."""
    import yaml
    from mm_helpers import write_image_dataset

    folder = tmp_path_factory.mktemp("vl-export")
    data = write_image_dataset(folder / "data")
    config = {"model_name_or_path": str(tiny_qwen2_vl), "stage": "sft", "finetuning_type": "lora",
              "lora_target": "all", "freeze_vision_tower": False, "freeze_multi_modal_projector": False,
              "dataset": "mllm_demo", "dataset_dir": str(data), "template": "qwen2_vl", "cutoff_len": 256,
              "output_dir": str(folder / "run"), "per_device_train_batch_size": 5, "max_steps": 2,
              "learning_rate": 5.0e-2, "seed": 0, "report_to": "none", "plot_loss": False}
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    assert lf(["train", str(folder / "run.yaml")]) == 0
    return folder / "run", data


def _messages(image):
    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "What colour is this?"}]}]


def test_exported_vlm_loads_in_plain_transformers_with_the_adapters_logits(vl_run, tiny_qwen2_vl, tmp_path):
    from peft import PeftModel
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run, data = vl_run
    adapted = load_file(run / "adapter_model.safetensors")
    assert any("visual.blocks" in k for k in adapted) and any("visual.merger" in k for k in adapted)
    out = tmp_path / "export"
    assert lf(["export", f"adapter_name_or_path={run}", f"export_dir={out}"]) == 0
    assert (out / "processor_config.json").is_file() and (out / "chat_template.jinja").is_file()

    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    image = Image.open(data / "mllm_demo_data" / "2.png")
    inputs = processor.apply_chat_template(_messages(image), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    text = processor.apply_chat_template(_messages(image), add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    f"{IMAGE_PROMPT}What colour is this?<|im_end|>\n<|im_start|>assistant\n")
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grid = inputs["image_grid_thw"][0].tolist()
    assert inputs["input_ids"][0].tolist().count(pad) == grid[0] * grid[1] * grid[2] // 4 > 0  # 84x84: 3x3

    exported = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(exported).__name__ == "Qwen2VLForConditionalGeneration"
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen2_vl)
    reference = PeftModel.from_pretrained(base, run).eval()
    with torch.no_grad():
        merged_logits = exported(**inputs).logits
        peft_logits = reference(**inputs).logits
        with reference.disable_adapter():
            base_logits = reference(**inputs).logits
    assert torch.allclose(merged_logits, peft_logits, atol=1e-5, rtol=0)
    assert (merged_logits - base_logits).abs().max() > 1e-2  # the adapter changed the model: the test can fail


def test_the_chat_template_still_renders_text_messages_as_before(vl_run, tmp_path):
    from transformers import AutoProcessor
    from transformers.utils.chat_template_utils import render_jinja_template

    from lf_data.templates import get_template

    run, _ = vl_run
    out = tmp_path / "export"
    assert lf(["export", f"adapter_name_or_path={run}", f"export_dir={out}"]) == 0
    processor = AutoProcessor.from_pretrained(out)
    plain = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Bye"}]
    parts = [*plain[:2], {"role": "user", "content": [{"type": "text", "text": "Bye"}]}]
    before, _ = render_jinja_template(conversations=[plain], chat_template=get_template("qwen2_vl").to_jinja(),
                                      add_generation_prompt=True)
    assert processor.apply_chat_template(plain, add_generation_prompt=True, tokenize=False) == before[0]
    assert processor.apply_chat_template(parts, add_generation_prompt=True, tokenize=False) == before[0]
    assert before[0].endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2_vl"


def test_media_chat_template_leaves_a_template_that_writes_the_marker_alone():
    from lf_models.media import media_chat_template

    own = "{% for m in messages %}<|vision_start|><|image_pad|><|vision_end|>{% endfor %}"
    markers = {"images": IMAGE_PROMPT}
    assert media_chat_template(own, markers) == own
    assert media_chat_template("{{ messages }}", {}) == "{{ messages }}"
    wrapped = media_chat_template("{% for m in messages %}[{{ m['content'] }}]{% endfor %}",
                                  {**markers, "videos": "<|vision_start|><|video_pad|><|vision_end|>"})
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "a"},
                                                     {"type": "image_url", "image_url": {"url": "x"}}]},
                        {"role": "assistant", "content": "b"}]], chat_template=wrapped)
    assert rendered == [f"[<|vision_start|><|video_pad|><|vision_end|>a{IMAGE_PROMPT}][b]"]


def test_export_of_a_vlm_without_its_processor_stops_before_loading(vl_run, tiny_qwen2_vl, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_qwen2_vl, bare)
    for name in ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json"):
        (bare / name).unlink(missing_ok=True)
    out = tmp_path / "export"
    assert lf(["export", f"model_name_or_path={bare}", f"export_dir={out}"]) == 1
    err = capsys.readouterr().err
    assert "has no multimodal processor" in err or "could not load the processor" in err, err
    assert not out.exists()
