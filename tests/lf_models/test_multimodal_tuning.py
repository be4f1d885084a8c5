"""LlamaFactory's multimodal tuning keys on the tiny Qwen2-VL: for full, freeze and LoRA tuning,
exactly the parameters of the towers that are not frozen train, and exactly those get gradients from a
forward pass with an image (so the vision tower really is part of the graph when it is unfrozen).
A text model given the keys is refused before anything loads."""

from __future__ import annotations

import pytest

from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments, check_model_combination
from lf_models.loader import load_model
from lf_models.precision import Precision

VISION, PROJECTOR, LANGUAGE = "vision", "projector", "language"
LORA_LANGUAGE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_VISION = ("qkv", "proj", "fc1", "fc2")


def tower(name: str) -> str:
    name = name.removeprefix("base_model.model.")
    if name.startswith("model.visual.merger."):
        return PROJECTOR
    if name.startswith("model.visual."):
        return VISION
    assert name.startswith(("model.language_model.", "lm_head.")), name
    return LANGUAGE


@pytest.fixture(scope="module")
def image_batch(tiny_qwen2_vl):
    """One prompt with a 56x84 image (6 image tokens) as the processor writes it, labels on every token."""
    from mm_helpers import make_image
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen2_vl)
    path = make_image(tiny_qwen2_vl.parent / "tuning-image" / "red.png", "red", (56, 84))
    batch = processor(text=["<|vision_start|><|image_pad|><|vision_end|>What colour is this? Red."],
                      images=[Image.open(path)], return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    return dict(batch)


def tuned(tiny_qwen2_vl, image_batch, **keys):
    """(trainable parameter names, names that got a gradient) after one forward/backward with an image."""
    args = FinetuningArguments(**keys)
    model = load_model(ModelArguments(model_name_or_path=str(tiny_qwen2_vl)), args, Precision(False, False), is_trainable=True)
    model(**image_batch).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    graded = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return model, trainable, graded


def all_params(tiny_qwen2_vl) -> dict[str, set[str]]:
    from transformers import Qwen2VLForConditionalGeneration

    names = [n for n, _ in Qwen2VLForConditionalGeneration.from_pretrained(tiny_qwen2_vl).named_parameters()]
    out: dict[str, set[str]] = {VISION: set(), PROJECTOR: set(), LANGUAGE: set()}
    for name in names:
        out[tower(name)].add(name)
    return out


@pytest.mark.parametrize(("keys", "towers"), [
    ({}, {LANGUAGE}),  # LlamaFactory's defaults: vision tower and projector frozen
    ({"freeze_vision_tower": False}, {VISION, LANGUAGE}),
    ({"freeze_multi_modal_projector": False}, {PROJECTOR, LANGUAGE}),
    ({"freeze_multi_modal_projector": False, "freeze_language_model": True}, {PROJECTOR}),
    ({"train_mm_proj_only": True}, {PROJECTOR}),
    ({"freeze_vision_tower": False, "freeze_multi_modal_projector": False}, {VISION, PROJECTOR, LANGUAGE}),
], ids=["defaults", "vision", "projector", "projector-only", "train_mm_proj_only", "everything"])
def test_full_tuning_trains_exactly_the_unfrozen_towers(tiny_qwen2_vl, image_batch, keys, towers):
    params = all_params(tiny_qwen2_vl)
    _, trainable, graded = tuned(tiny_qwen2_vl, image_batch, finetuning_type="full", **keys)
    expected = set().union(*(params[t] for t in towers))
    assert trainable == expected
    # every trainable parameter, the vision tower's included, gets a non-zero gradient through the image
    assert graded == trainable


@pytest.mark.parametrize(("keys", "towers"), [
    ({}, set()),
    ({"freeze_vision_tower": False}, {VISION}),
    ({"freeze_multi_modal_projector": False}, {PROJECTOR}),
], ids=["defaults", "vision", "projector"])
def test_freeze_tuning_adds_the_unfrozen_encoder_towers_to_the_chosen_layers(tiny_qwen2_vl, image_batch, keys,
                                                                               towers):
    params = all_params(tiny_qwen2_vl)
    _, trainable, graded = tuned(tiny_qwen2_vl, image_batch, finetuning_type="freeze", freeze_trainable_layers=1,
                                 **keys)
    last_layer = {n for n in params[LANGUAGE] if n.startswith("model.language_model.layers.1.")}
    assert last_layer and trainable == last_layer.union(*(params[t] for t in towers))
    assert graded == trainable


def test_freeze_tuning_with_the_language_model_frozen_trains_the_projector_alone(tiny_qwen2_vl, image_batch):
    params = all_params(tiny_qwen2_vl)
    _, trainable, graded = tuned(tiny_qwen2_vl, image_batch, finetuning_type="freeze", freeze_trainable_layers=1,
                                 freeze_language_model=True, freeze_multi_modal_projector=False)
    assert trainable == params[PROJECTOR] and graded == trainable


def _adapted(trainable: set[str]) -> dict[str, set[str]]:
    """Per tower, the module names (last part) that carry LoRA matrices."""
    out: dict[str, set[str]] = {}
    for name in trainable:
        assert ".lora_A." in name or ".lora_B." in name, name
        module = name.split(".lora_")[0]
        out.setdefault(tower(module + ".weight"), set()).add(module.split(".")[-1])
    return out


@pytest.mark.parametrize(("keys", "expected"), [
    ({}, {LANGUAGE: set(LORA_LANGUAGE)}),
    ({"freeze_vision_tower": False}, {LANGUAGE: set(LORA_LANGUAGE), VISION: set(LORA_VISION)}),
    ({"freeze_multi_modal_projector": False}, {LANGUAGE: set(LORA_LANGUAGE), PROJECTOR: {"0", "2"}}),
    ({"freeze_vision_tower": False, "freeze_language_model": True}, {VISION: set(LORA_VISION)}),
    ({"lora_target": ["q_proj", "qkv"]}, {LANGUAGE: {"q_proj"}}),  # named layers of a frozen tower: skipped
    ({"lora_target": ["q_proj", "qkv"], "freeze_vision_tower": False}, {LANGUAGE: {"q_proj"}, VISION: {"qkv"}}),
], ids=["defaults", "vision", "projector", "vision-only", "names", "names-vision"])
def test_lora_adapts_exactly_the_unfrozen_towers(tiny_qwen2_vl, image_batch, keys, expected):
    model, trainable, graded = tuned(tiny_qwen2_vl, image_batch, finetuning_type="lora",
                                     **{"lora_target": ["all"], **keys})
    assert _adapted(trainable) == expected
    # LoRA's B starts at zero, so only the B matrices have a gradient after one step, in every adapted tower
    assert graded == {n for n in trainable if ".lora_B." in n}
    layers = {n.split(".lora_")[0] for n in trainable}
    per_tower = {t: len({m for m in layers if tower(m + ".w") == t}) for t in expected}
    counts = {LANGUAGE: 2 * 7, VISION: 2 * 4, PROJECTOR: 2}  # two layers/blocks each; the merger's two linears
    assert per_tower == {t: counts[t] if keys.get("lora_target") in (None, ["all"]) else 2 for t in expected}
    assert "lm_head" not in " ".join(layers)


def test_lora_target_naming_only_frozen_layers_is_refused_before_loading(tiny_qwen2_vl):
    from lf_models.adapters import check_lora_target

    args = FinetuningArguments(finetuning_type="lora", lora_target=["qkv", "fc1"])
    model_args = ModelArguments(model_name_or_path=str(tiny_qwen2_vl))
    message = r"lora_target qkv, fc1 names modules of frozen towers only \(freeze_vision_tower: true"
    with pytest.raises(ConfigError, match=message):
        check_lora_target(model_args, args)  # `lf train --check`: on an empty (meta-device) copy
    with pytest.raises(ConfigError, match=message):
        load_model(model_args, args, Precision(False, False), is_trainable=True)
    check_lora_target(model_args, FinetuningArguments(lora_target=["qkv"], freeze_vision_tower=False))


@pytest.mark.parametrize(("keys", "message"), [
    ({"freeze_vision_tower": False}, "freeze_vision_tower: false applies to multimodal models"),
    ({"freeze_multi_modal_projector": False, "freeze_language_model": True},
     "freeze_multi_modal_projector: false, freeze_language_model: true applies to multimodal models"),
    ({"train_mm_proj_only": True, "finetuning_type": "full"}, "train_mm_proj_only: true applies to multimodal models"),
])
def test_a_text_model_refuses_the_multimodal_keys_before_loading(tiny_llama, keys, message, monkeypatch):
    import lf_models.loader

    monkeypatch.setattr(lf_models.loader, "resolve_model", lambda *a: pytest.fail("the model was resolved"))
    model_args = ModelArguments(model_name_or_path=str(tiny_llama))
    with pytest.raises(ConfigError, match=rf"{message}, but .* \(model_type llama\) is a text model"):
        check_model_combination(model_args, FinetuningArguments(**keys))
    check_model_combination(model_args, FinetuningArguments(freeze_vision_tower=True))  # the defaults: fine


@pytest.mark.parametrize(("keys", "message"), [
    ({"train_mm_proj_only": True}, "train_mm_proj_only trains the projector's own weights: use finetuning_type: full"),
    ({"train_mm_proj_only": True, "finetuning_type": "full", "freeze_vision_tower": False},
     "freeze_vision_tower is false; drop one"),
    ({"freeze_language_model": True}, "leaves nothing to train"),
])
def test_contradictory_keys_are_refused(keys, message):
    with pytest.raises(ConfigError, match=message):
        FinetuningArguments(**keys)


def test_lf_train_check_refuses_the_keys_for_a_text_model(tiny_llama, data_dir, tmp_path, capsys):
    import yaml

    from lf_data.cli import main as lf

    config = {"model_name_or_path": str(tiny_llama), "stage": "sft", "dataset": "identity", "dataset_dir": str(data_dir),
              "template": "chatml", "output_dir": str(tmp_path / "out"), "freeze_vision_tower": False}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert lf(["train", str(tmp_path / "run.yaml"), "--check"]) == 1
    err = capsys.readouterr().err
    assert "freeze_vision_tower: false applies to multimodal models" in err and len(err.strip().splitlines()) == 1


def test_the_keys_are_lf_keys_in_the_llamafactory_table():
    from lf_data.llamafactory_keys import KEYS

    for key in ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model", "image_min_pixels",
                "video_fps", "audio_sampling_rate"):
        assert KEYS[key].kind == "lf", key
