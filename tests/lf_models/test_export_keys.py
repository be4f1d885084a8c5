"""LlamaFactory's export keys on `lf export`: its merge recipes (local paths) pass `--check`, GPTQ answers
with the hardware it lacks, the value head and the hub upload follow, and the exported folder loads
in plain transformers with the logits of base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lf_data.cli import main as lf
from lf_data.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures"
# LlamaFactory 0.9.5's examples/merge_lora recipes, key for key; paths are filled in by the test
MERGE_RECIPES = {
    "qwen3_lora_sft": {"template": "qwen3_nothink", "trust_remote_code": True, "export_size": 5,
                       "export_device": "cpu", "export_legacy_format": False, "adapter": True},
    "qwen3vl_lora_sft": {"template": "qwen3_vl_nothink", "trust_remote_code": True, "export_size": 5,
                         "export_device": "cpu", "export_legacy_format": False, "adapter": True},
    "qwen3_full_sft": {"template": "qwen3_nothink", "trust_remote_code": True, "export_size": 5,
                       "export_device": "cpu", "export_legacy_format": False},
    "qwen3_gptq": {"template": "qwen3_nothink", "trust_remote_code": True, "export_quantization_bit": 4,
                   "export_quantization_dataset": "c4_demo.jsonl", "export_size": 5, "export_device": "cpu",
                   "export_legacy_format": False},
}
CALIBRATION_ROWS = [{"text": "The quick brown fox jumps over the lazy dog. " * 6},
                    {"text": "short"},
                    {"text": "Lumen was made by the LF team to answer questions about fine-tuning. " * 4}]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama) -> Path:
    """A LoRA adapter with non-zero B (it changes the logits) and a value head, as `lf train` leaves them."""
    from model_helpers import save_lora_adapter
    from safetensors.torch import save_file

    out = save_lora_adapter(tiny_llama, tmp_path_factory.mktemp("adapter"))
    save_file({"summary.weight": torch.arange(32.0).reshape(1, 32), "summary.bias": torch.tensor([0.5])},
              out / "value_head.safetensors")
    return out


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "c4_demo.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in CALIBRATION_ROWS) + "\n")
    return path


def recipe(name: str, tmp_path: Path, tiny_llama: Path, adapter: Path, calibration: Path, **extra) -> str:
    config = dict(MERGE_RECIPES[name])
    config["model_name_or_path"] = str(tiny_llama)
    if config.pop("adapter", False):
        config["adapter_name_or_path"] = str(adapter)
    if "export_quantization_dataset" in config:
        config["export_quantization_dataset"] = str(calibration)
    config["export_dir"] = str(tmp_path / "saves" / f"{name}_merged")
    config.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("name", ["qwen3_lora_sft", "qwen3vl_lora_sft", "qwen3_full_sft"])
def test_llamafactory_merge_recipes_pass_check(name, tmp_path, tiny_llama, adapter, calibration, capsys):
    path = recipe(name, tmp_path, tiny_llama, adapter, calibration)
    assert lf(["export", path, "--check"]) == 0
    out = capsys.readouterr().out
    assert f"{path} is valid." in out and "on the CPU" in out
    assert ("merge 1 adapter(s)" in out) == ("lora" in name)
    resolved = yaml.safe_load(out.split("resolved config:")[1])
    assert resolved["export_device"] == "cpu" and resolved["export_legacy_format"] is False
    assert resolved["template"] == MERGE_RECIPES[name]["template"]
    assert not (tmp_path / "saves").exists()  # --check writes nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_gptq_recipe_names_the_missing_gpu_and_packages(tmp_path, tiny_llama, adapter, calibration, capsys):
    path = recipe("qwen3_gptq", tmp_path, tiny_llama, adapter, calibration)
    assert lf(["export", path, "--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err == ("error: export_quantization_bit=4 (GPTQ) needs a CUDA GPU, gptqmodel, optimum, which this machine "
                   "lacks: pip install gptqmodel optimum on a machine with a CUDA GPU.")


def test_bad_export_keys_are_one_line_each(tmp_path, tiny_llama, adapter, calibration, capsys):
    from lf_models.export import parse_export_config

    base = {"model_name_or_path": str(tiny_llama), "export_dir": str(tmp_path / "out")}
    cases = {
        "export_legacy_format: true asks for pickled .bin weights": {"export_legacy_format": True},
        "export_quantization_bit=5: GPTQ quantises to 2, 3, 4 or 8 bits": {"export_quantization_bit": 5,
                                                                          "export_quantization_dataset": "x"},
        "export_quantization_bit needs export_quantization_dataset": {"export_quantization_bit": 4},
        "merge the adapters first": {"export_quantization_bit": 4, "export_quantization_dataset": str(calibration),
                                     "adapter_name_or_path": str(adapter)},
        "export_device": {"export_device": "gpu"},
        "infer_dtype='int8'": {"infer_dtype": "int8"},
        "adapter_name_or_path needs finetuning_type: lora": {"adapter_name_or_path": str(adapter),
                                                             "finetuning_type": "full"},
    }
    for message, extra in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
            parse_export_config({**base, **extra})
    # LlamaFactory's infer_dtype sets the exported dtype; an explicit export_dtype wins
    assert parse_export_config({**base, "infer_dtype": "bfloat16"})[1].export_dtype == "bfloat16"
    assert parse_export_config({**base, "infer_dtype": "bfloat16", "export_dtype": "float16"})[1].export_dtype == "float16"


def test_every_key_llamafactory_export_takes_is_accepted(tmp_path, tiny_llama):
    """LlamaFactory's export parser takes its model, data, finetuning and generating arguments."""
    from lf_models.export import export_keys, parse_export_config

    llamafactory = json.loads((FIXTURES / "llamafactory_export_keys.json").read_text())
    names = {key for section in llamafactory.values() for key in section}
    assert len(names) == 211
    assert names - export_keys() == set()
    # stage, generation and training keys do not trip the unknown-key check; typed ones are still typed
    config = {"model_name_or_path": str(tiny_llama), "export_dir": str(tmp_path / "o"), "stage": "rm",
              "temperature": 0.7, "cutoff_len": 1024, "lora_rank": 16, "finetuning_type": "lora", "do_sample": True}
    parse_export_config(config)
    with pytest.raises(ConfigError, match="cutoff_len"):
        parse_export_config({**config, "cutoff_len": "long"})
    with pytest.raises(ConfigError, match="unknown config key .export_dirr.. Did you mean .export_dir."):
        parse_export_config({**config, "export_dirr": "x"})


def test_export_with_llamafactory_keys_loads_in_plain_transformers(tmp_path, tiny_llama, adapter, calibration,
                                                                   monkeypatch, capsys):
    """A real export through `lf export` with LlamaFactory's keys (stage rm, cpu device, safetensors, hub id):
    the folder has the merged weights (same logits as base + adapter), the value head, and is uploaded."""
    import huggingface_hub
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    calls: list[tuple] = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, repo_type=None, exist_ok=False):
            calls.append(("create_repo", repo_id, repo_type, exist_ok))

        def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
            calls.append(("upload_folder", folder_path, repo_id, repo_type, sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    path = recipe("qwen3_lora_sft", tmp_path, tiny_llama, adapter, calibration, stage="rm", template="chatml",
                  temperature=0.7, export_hub_model_id="lf-tests/tiny-merged", hf_hub_token="hf_secret")
    assert lf(["export", path]) == 0
    out = Path(yaml.safe_load(Path(path).read_text())["export_dir"])
    assert "Uploaded to https://huggingface.co/lf-tests/tiny-merged" in capsys.readouterr().out
    assert calls[0] == ("init", "hf_secret")
    assert calls[1] == ("create_repo", "lf-tests/tiny-merged", "model", True)
    assert calls[2][:4] == ("upload_folder", str(out), "lf-tests/tiny-merged", "model")
    assert {"model.safetensors", "config.json", "value_head.safetensors", "Modelfile"} <= set(calls[2][4])
    assert not any(name.endswith(".bin") for name in calls[2][4])

    head = load_file(out / "value_head.safetensors")
    assert torch.equal(head["summary.weight"], torch.arange(32.0).reshape(1, 32))
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)(ids).logits
    assert (got - expected).abs().max() < 1e-5
    assert (base - expected).abs().max() > 0.1


def test_hub_upload_without_a_token_is_refused_before_loading(tmp_path, tiny_llama, adapter, calibration,
                                                              monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    path = recipe("qwen3_lora_sft", tmp_path, tiny_llama, adapter, calibration, export_hub_model_id="me/model")
    assert lf(["export", path, "--check"]) == 1
    assert capsys.readouterr().err.strip() == ("error: export_hub_model_id needs a Hugging Face token with write "
                                               "access: set hf_hub_token, or HF_TOKEN, or run `hf auth login`.")
    path = recipe("qwen3_lora_sft", tmp_path, tiny_llama, adapter, calibration, export_hub_model_id="bad id!",
                  hf_hub_token="x")
    assert lf(["export", path, "--check"]) == 1
    assert "export_hub_model_id 'bad id!' is not a repository id" in capsys.readouterr().err


def test_gptq_calibration_samples_are_windows_of_rows(tiny_llama, calibration):
    """nsamples windows of exactly maxlen tokens, each a contiguous slice of one row longer than maxlen."""
    from transformers import AutoTokenizer

    from lf_models.export import calibration_samples

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    rows = [tokenizer(r["text"], add_special_tokens=False)["input_ids"] for r in CALIBRATION_ROWS]
    samples = calibration_samples(tokenizer, str(calibration), nsamples=5, maxlen=12)
    assert len(samples) == 5
    for sample in samples:
        window = sample["input_ids"][0]
        assert len(window) == 12 and sample["attention_mask"] == [[1] * 12]
        assert any(window == row[i:i + 12] for row in rows for i in range(len(row) - 11))
    assert samples == calibration_samples(tokenizer, str(calibration), nsamples=5, maxlen=12)  # seeded
    with pytest.raises(ConfigError, match="lower export_quantization_maxlen"):
        calibration_samples(tokenizer, str(calibration), nsamples=1, maxlen=10_000)


def test_gptq_calibration_dataset_is_checked_before_loading(tmp_path, calibration):
    from lf_models.export import _check_gptq_dataset

    _check_gptq_dataset(str(calibration))
    _check_gptq_dataset("allenai/c4")  # a hub dataset id
    with pytest.raises(ConfigError, match=r"'data/c4_demo.jsonl' does not exist"):
        _check_gptq_dataset("data/c4_demo.jsonl")  # LlamaFactory's relative path, run from another folder
    (tmp_path / "calib.xml").write_text("<t/>")
    with pytest.raises(ConfigError, match=r"calibration text is read from .json, .jsonl, .csv, .parquet, .txt files"):
        _check_gptq_dataset(str(tmp_path / "calib.xml"))
