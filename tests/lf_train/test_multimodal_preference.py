"""Preference training with images, in the shape of LlamaFactory's `qwen3vl_lora_dpo` recipe
(sharegpt pairwise rows with `images`, `chosen` and `rejected`, as its RLHF-V dataset): the vision tower
runs on the pixels of both the chosen and the rejected halves, the reference (LoRA switched off) sees
the same pixels, and the loss starts at exactly log 2 (policy = reference). KTO does the same for its
answers and for the mismatched `kl_` pairs, which keep their own row's images; the reward model too."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mm_helpers import make_image
from train_helpers import losses

from lf_data.cli import main as lf

COLOURS = ["red", "blue", "green", "yellow"]


def write_preference_datasets(folder: Path) -> Path:
    """`rlhf_demo` (pairwise, RLHF-V's columns) and `kto_mm_demo` (one answer per row with a kto tag),
    four rows each, one image per row (56x56 to 98x56 pixels: 4 to 8 image tokens)."""
    pairs, kto = [], []
    for i, colour in enumerate(COLOURS):
        image = make_image(folder / "rlhf_demo_data" / f"{i}.png", colour, (56 + 14 * i, 56))
        ref = f"rlhf_demo_data/{image.name}"
        wrong = COLOURS[(i + 1) % len(COLOURS)]
        pairs.append({"conversations": [{"from": "human", "value": "<image>What colour is this?"}],
                      "chosen": {"from": "gpt", "value": f"It is {colour}."},
                      "rejected": {"from": "gpt", "value": f"It is {wrong}."}, "images": [ref]})
        kto.append({"messages": [{"from": "human", "value": "<image>What colour is this?"},
                                 {"from": "gpt", "value": f"It is {colour if i % 2 == 0 else wrong}."}],
                    "label": i % 2 == 0, "images": [ref]})
    (folder / "rlhf_demo.json").write_text(json.dumps(pairs))
    (folder / "kto_mm_demo.json").write_text(json.dumps(kto))
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["rlhf_demo"] = {"file_name": "rlhf_demo.json", "ranking": True, "formatting": "sharegpt",
                         "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected",
                                     "images": "images"}}
    info["kto_mm_demo"] = {"file_name": "kto_mm_demo.json", "formatting": "sharegpt",
                           "columns": {"messages": "messages", "kto_tag": "label", "images": "images"}}
    info_path.write_text(json.dumps(info, indent=2))
    return folder


@pytest.fixture
def preference_config(tiny_qwen2_vl, data_dir, tmp_path):
    """The qwen3vl_lora_dpo recipe's keys, on the tiny Qwen2-VL: two rows per step, two steps."""
    write_preference_datasets(data_dir)
    return {"model_name_or_path": str(tiny_qwen2_vl), "stage": "dpo", "do_train": True, "finetuning_type": "lora",
            "lora_rank": 8, "lora_target": "all", "pref_beta": 0.1, "pref_loss": "sigmoid", "dataset": "rlhf_demo",
            "dataset_dir": str(data_dir), "template": "qwen2_vl", "cutoff_len": 256, "image_max_pixels": 262144,
            "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 2, "max_steps": 2,
            "learning_rate": 1.0e-2, "logging_steps": 1, "seed": 0, "report_to": "none", "plot_loss": False,
            "disable_shuffling": True}


def record_vision_calls(monkeypatch) -> list[dict]:
    """Every call of the vision tower during `lf train`: its grid rows, its pixels, whether gradients
    were on (the policy) and whether the LoRA adapter was switched off (the reference)."""
    import lf_train.run

    calls: list[dict] = []
    load = lf_train.run.load_model

    def hooked(*args, **kwargs):
        model = load(*args, **kwargs)
        lora = next(m for name, m in model.named_modules() if name.endswith("self_attn.q_proj"))

        def record(module, inputs, kwargs, output):
            pixels = inputs[0] if inputs else kwargs["hidden_states"]
            grid = kwargs.get("grid_thw", inputs[1] if len(inputs) > 1 else None)
            calls.append({"grid": grid.tolist(), "pixels": pixels.detach().clone(), "grad": torch.is_grad_enabled(),
                          "adapter_off": bool(lora.disable_adapters)})

        visual = next(m for name, m in model.named_modules() if name.endswith("model.visual"))
        visual.register_forward_hook(record, with_kwargs=True)
        return model

    monkeypatch.setattr(lf_train.run, "load_model", hooked)
    return calls


def halves(call: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel rows of the first and second half of a call's images (chosen and rejected)."""
    sizes = [t * h * w for t, h, w in call["grid"]]
    half = sum(sizes[: len(sizes) // 2])
    return call["pixels"][:half], call["pixels"][half:]


def test_dpo_with_images_feeds_both_halves_and_the_reference(preference_config, write_config, monkeypatch, tmp_path):
    calls = record_vision_calls(monkeypatch)
    assert lf(["train", str(write_config(**preference_config))]) == 0
    # per step: the reference's forward (no gradients, adapter off; first, so its memory is free before the
    # policy's graph is built) then the policy's (gradients on, adapter on)
    assert [(c["grad"], c["adapter_off"]) for c in calls] == [(False, True), (True, False)] * 2
    for step in range(2):
        reference, policy = calls[2 * step], calls[2 * step + 1]
        # two rows: their two images for the chosen half, the same two again for the rejected half
        assert len(policy["grid"]) == 4 and policy["grid"][:2] == policy["grid"][2:]
        assert policy["pixels"].shape[0] == sum(t * h * w for t, h, w in policy["grid"]) > 0
        chosen, rejected = halves(policy)
        assert torch.equal(chosen, rejected)
        assert reference["grid"] == policy["grid"] and torch.equal(reference["pixels"], policy["pixels"])
    # the rows in order (disable_shuffling): images 0 and 1, then 2 and 3 (widths 56, 70, 84, 98 pixels become
    # 4, 4, 6, 8 patches across: Qwen2-VL rounds each side to a multiple of 28)
    assert [g[2] for g in calls[0]["grid"][:2]] == [4, 4] and [g[2] for g in calls[2]["grid"][:2]] == [6, 8]
    run = losses(tmp_path / "out")
    assert len(run) == 2 and all(math.isfinite(x) for x in run)
    assert run[0] == pytest.approx(math.log(2), abs=1e-4)  # LoRA's B starts at zero: policy = reference
    logged = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    first = next(row for row in logged if "loss" in row)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6) and math.isfinite(first["logps/rejected"])
    from safetensors.torch import load_file

    assert not any("visual" in key for key in load_file(tmp_path / "out" / "adapter_model.safetensors"))


def test_kto_with_images_feeds_the_answers_and_the_kl_pairs(preference_config, write_config, monkeypatch, tmp_path):
    calls = record_vision_calls(monkeypatch)
    config = {**preference_config, "stage": "kto", "dataset": "kto_mm_demo", "max_steps": 1}
    assert lf(["train", str(write_config(**config))]) == 0
    # one step: the reference first (adapter off, no grad) on the kl_ pairs and the answers, then the policy on
    # the kl_ pairs (no grad) and on the answers (grad)
    assert [(c["grad"], c["adapter_off"]) for c in calls] == [(False, True), (False, True), (False, False),
                                                              (True, False)]
    answers = calls[0]
    assert len(answers["grid"]) == 2 and answers["pixels"].shape[0] == sum(t * h * w for t, h, w in answers["grid"])
    for other in calls[1:]:  # each kl_ pair is its own row's prompt (and image) with another row's answer
        assert other["grid"] == answers["grid"] and torch.equal(other["pixels"], answers["pixels"])
    run = losses(tmp_path / "out")
    assert len(run) == 1 and math.isfinite(run[0])
    assert run[0] == pytest.approx(0.5, abs=1e-4)  # policy = reference: 1 - sigmoid(0) for every answer


def test_reward_model_with_images_scores_both_halves(preference_config, write_config, monkeypatch, tmp_path):
    calls = record_vision_calls(monkeypatch)
    config = {**preference_config, "stage": "rm", "max_steps": 1}
    assert lf(["train", str(write_config(**config))]) == 0
    assert len(calls) == 1 and calls[0]["grad"] and len(calls[0]["grid"]) == 4
    chosen, rejected = halves(calls[0])
    assert torch.equal(chosen, rejected)
    run = losses(tmp_path / "out")
    assert len(run) == 1 and math.isfinite(run[0]) and run[0] > 0
