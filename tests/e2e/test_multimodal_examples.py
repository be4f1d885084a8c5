"""Every multimodal example recipe (a hub VLM or audio model on the mllm_* demo data in data/) runs exactly
as a user starts it, with the hub model swapped for a tiny random model of the same family and the few-steps
overrides of test_examples.py; the model's media encoder runs on every step."""

from pathlib import Path

import pytest
import yaml
from mm_helpers import build_tiny_qwen2_audio
from test_examples import MULTIMODAL, QUICK, REPO, check_run

from lf_data.cli import main as lf

ENCODER = {"qwen2_vl": "model.visual", "qwen2_audio": "model.audio_tower"}
"""The module of each template's family that must see the media (forward hook)."""


def recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "examples" / "train" / name).read_text())


@pytest.fixture(scope="module")
def tiny_models(tiny_qwen2_vl, tmp_path_factory, tiny_tokenizer_dir):
    audio = build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"), tiny_tokenizer_dir)
    return {"qwen2_vl": tiny_qwen2_vl, "qwen2_audio": audio}


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes name data/ relative to the repository, as the README runs them


def test_the_recipes_are_found():
    assert {"qwen2_vl_lora_sft.yaml", "qwen2_vl_video_lora_sft.yaml", "qwen2_audio_lora_sft.yaml"} <= set(MULTIMODAL)
    for name in MULTIMODAL:
        assert recipe(name)["template"] in ENCODER, f"{name}: add a tiny model of its family to this test"


@pytest.mark.parametrize("example", MULTIMODAL)
def test_multimodal_example_runs(example, tiny_models, monkeypatch, tmp_path):
    import lf_train.run

    template = recipe(example)["template"]
    calls, forwards = [], []
    load = lf_train.run.load_model

    def hooked(*args, **kwargs):
        model = load(*args, **kwargs)
        encoder = next(m for name, m in model.named_modules() if name.endswith(ENCODER[template]))
        encoder.register_forward_hook(lambda *_: calls.append(1))
        model.register_forward_hook(lambda *_: forwards.append(1))
        return model

    monkeypatch.setattr(lf_train.run, "load_model", hooked)
    out = tmp_path / "out"
    assert lf(["train", f"examples/train/{example}", f"model_name_or_path={tiny_models[template]}",
               f"output_dir={out}", *QUICK]) == 0
    check_run(out)
    # every row of the demo datasets has media: the encoder runs in every forward of the two steps
    assert len(calls) == len(forwards) >= 2
    assert Path(out, "adapter_model.safetensors").is_file()
