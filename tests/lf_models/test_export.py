"""`lf export` on the tiny Llama, the way a user runs it (through `lf`): a LoRA adapter merged into its
base, saved as safetensors or GGUF, and loaded back by plain transformers with the same logits."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lf_data.cli import main as lf

PROMPT = [{"role": "user", "content": "Who are you?"}]
TEXTS = ["Who are you? I am Lumen, made by the LF team.", "<|im_start|>user\nhi<|im_end|>\n", "  42 ÄÖ\n\nfox"]
# max |logit difference| between the export and base + adapter, per GGUF tensor type (measured:
# f32 0.0, f16 ~1e-2, q8_0 ~0.1 on this tiny model with large random weights, logits up to ~6)
GGUF_TOLERANCE = {"f32": 1e-4, "f16": 3e-2, "q8_0": 0.3}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama) -> Path:
    """What `lf train` leaves: a LoRA adapter (random, non-zero B), the tokenizer with its chat
    template and lf_config.yaml naming the base and the template."""
    from model_helpers import save_lora_adapter
    from transformers import AutoTokenizer

    from lf_data.templates import get_template

    out = save_lora_adapter(tiny_llama, tmp_path_factory.mktemp("adapter"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = get_template("chatml").to_jinja()
    tokenizer.save_pretrained(out)
    (out / "lf_config.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(tiny_llama), "template": "chatml"}))
    return out


@pytest.fixture(scope="module")
def reference(tiny_llama, adapter):
    """(base + adapter through peft, input ids, its logits)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter).eval()
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    return model, ids, logits


def greedy(model, ids, n=8):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)[0, ids.shape[1]:].tolist()


def write_yaml(path: Path, **config) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_lora_merged_into_safetensors_loads_in_plain_transformers(tmp_path, tiny_llama, adapter, reference, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    peft_model, ids, expected = reference
    out = tmp_path / "exports" / "merged"
    config = write_yaml(tmp_path / "export.yaml", model_name_or_path=str(tiny_llama),
                        adapter_name_or_path=str(adapter), export_dir=str(out))
    assert lf(["export", config, "--check"]) == 0  # everything checked, nothing written
    printed = capsys.readouterr().out
    assert f"{config} is valid." in printed and f"merge 1 adapter(s) {adapter}" in printed
    assert "template: chatml" in printed and not out.parent.exists()
    (out.parent / ".merged.tmp-killed").mkdir(parents=True)  # what an export killed mid-way leaves
    (out.parent / ".merged.tmp-killed" / "model.safetensors").write_text("half")
    old_umask = os.umask(0o022)
    try:
        assert lf(["export", config]) == 0
    finally:
        os.umask(old_umask)
    printed = capsys.readouterr().out
    assert f"The merged model is in {out}/" in printed and "AutoModelForCausalLM.from_pretrained" in printed
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "Modelfile",
                 "lf_export.yaml"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_mode & 0o777 == 0o644, name  # readable by a server running as another user
    assert out.stat().st_mode & 0o777 == 0o755
    assert not (out / "adapter_config.json").exists()
    assert [p.name for p in out.parent.iterdir()] == ["merged"]  # no temporary folder left, the stale one removed

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.dtype == torch.float32  # auto: the base's dtype
    with torch.no_grad():
        got = model(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)(ids).logits
    assert (got - expected).abs().max() < 1e-5
    assert (base - expected).abs().max() > 0.1  # the adapter changes the model, so the check means something
    assert greedy(model, ids) == greedy(peft_model, ids)

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")

    modelfile = (out / "Modelfile").read_text()
    assert "FROM .\n" in modelfile
    assert 'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}' in modelfile
    assert '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert yaml.safe_load((out / "lf_export.yaml").read_text())["template"] == "chatml"


def test_shards_dtype_and_base_from_the_adapter_run(tmp_path, adapter, reference):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    _, ids, expected = reference
    out = tmp_path / "half"
    # no model_name_or_path: the base comes from the adapter's lf_config.yaml
    assert lf(["export", f"adapter_name_or_path={adapter}", f"export_dir={out}", "export_size=0.00003",
               "export_dtype=float16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    with safe_open(out / shards[0], "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}  # noqa: SIM118
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (model(ids).logits - expected).abs().max() < 3e-2


def test_bad_input_is_refused_before_anything_is_written(tmp_path, tiny_llama, adapter, capsys):
    out = tmp_path / "out"
    base = [f"model_name_or_path={tiny_llama}", f"adapter_name_or_path={adapter}"]

    assert lf(["export", *base, f"export_dri={out}"]) == 1
    err = capsys.readouterr().err
    assert "unknown config key 'export_dri'" in err and "Did you mean 'export_dir'?" in err

    assert lf(["export", *base]) == 1
    assert "`export_dir` is required" in capsys.readouterr().err

    assert lf(["export", *base, f"export_dir={out}", "quantization_bit=4"]) == 1
    assert "cannot be merged into a quantised model" in capsys.readouterr().err

    quantised = tmp_path / "gptq-base"
    shutil.copytree(tiny_llama, quantised)
    config = json.loads((quantised / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (quantised / "config.json").write_text(json.dumps(config))
    assert lf(["export", f"model_name_or_path={quantised}", f"adapter_name_or_path={adapter}",
               f"export_dir={out}"]) == 1
    assert "is quantised (gptq)" in capsys.readouterr().err

    assert lf(["export", *base, f"export_dir={out}", "export_quantization=q8_0"]) == 1
    assert "export_quantization applies to export_format: gguf" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    assert lf(["export", str(adapter)]) == 1  # a folder where the config file goes
    assert "is a folder; a YAML config file is expected here" in capsys.readouterr().err
    assert lf(["export", "adapter_name_or_path=saves/no-such-run", f"export_dir={out}"]) == 1
    assert "'saves/no-such-run' is not a folder here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        lf(["export"])
    assert exited.value.code == 2
    assert "give a YAML config file and/or key=value arguments" in capsys.readouterr().err

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert lf(["export", *base, f"export_dir={out}"]) == 1
    assert "is not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert lf(["export", *base, f"export_dir={out}", "overwrite_export_dir=true"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("quantization", ["f32", "f16", "q8_0"])
def test_gguf_round_trips_through_transformers(tmp_path, adapter, reference, quantization, capsys, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    peft_model, ids, expected = reference
    out = tmp_path / "gguf"
    assert lf(["export", f"adapter_name_or_path={adapter}", f"export_dir={out}", "export_format=gguf",
               f"export_quantization={quantization}"]) == 0
    name = f"gguf-{quantization}.gguf"
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "Modelfile", "lf_export.yaml"])
    assert f"gguf_file={name!r}" in capsys.readouterr().out
    assert f"FROM ./{name}\n" in (out / "Modelfile").read_text()

    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (model(ids).logits - expected).abs().max().item()
    assert diff < GGUF_TOLERANCE[quantization], diff
    if quantization != "q8_0":
        assert greedy(model, ids) == greedy(peft_model, ids)

    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=name)
    original = AutoTokenizer.from_pretrained(adapter)
    assert [tokenizer.encode(t) for t in TEXTS] == [original.encode(t) for t in TEXTS]
    assert tokenizer.chat_template == original.chat_template
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")

    if quantization == "q8_0":  # read back as LF reads a .gguf model: converted once into a cached folder
        import gguf

        from lf_models.gguf_import import converted_dir

        real_init, parsed = gguf.GGUFReader.__init__, []

        def counting(self, path, *args, **kwargs):
            parsed.append(path)
            real_init(self, path, *args, **kwargs)

        monkeypatch.setattr(gguf.GGUFReader, "__init__", counting)
        monkeypatch.setenv("LF_CACHE_HOME", str(tmp_path / "cache"))
        folder = converted_dir(out / name)
        assert len(parsed) == 1  # tokenizer, config and weights from one reading of the file
        assert isinstance(gguf.GGUFReader, type) and gguf.get_tensor_name_map.__module__ == "gguf.tensor_mapping"
        converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            assert torch.equal(converted(ids).logits, model(ids).logits)
        assert AutoTokenizer.from_pretrained(folder).encode(TEXTS[0]) == original.encode(TEXTS[0])


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_gguf_writes_qwen2_and_mistral(tmp_path, tiny_model_factory, arch):
    from transformers import AutoModelForCausalLM

    base = tiny_model_factory(arch)
    out = tmp_path / arch
    assert lf(["export", f"model_name_or_path={base}", f"export_dir={out}", "export_format=gguf",
               "export_quantization=f32"]) == 0
    ids = torch.tensor([[5, 17, 42, 99, 7, 250]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(base)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out, gguf_file=f"{arch}-f32.gguf", dtype=torch.float32)(ids).logits
    assert (got - expected).abs().max() < 1e-4
    modelfile = (out / "Modelfile").read_text()
    if arch == "qwen2":  # no chat template in the tokenizer: the family's (qwen), as `lf train` would use
        assert 'SYSTEM """You are Qwen' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    else:  # mistral's family template, [INST] turns
        assert "[INST]" in modelfile and "No LF template is known" not in modelfile


def test_gguf_refuses_architectures_it_cannot_write(tmp_path, tiny_model_factory, capsys):
    out = tmp_path / "neox"
    assert lf(["export", f"model_name_or_path={tiny_model_factory('gpt_neox')}", f"export_dir={out}",
               "export_format=gguf"]) == 1
    assert "GGUF export supports llama, mistral, qwen2 models, not 'gpt_neox'" in capsys.readouterr().err
    assert not out.exists()


def test_command_module_is_light():
    code = "import sys, lf_models.commands; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_export_dir_may_not_contain_the_adapter(tmp_path, capsys):
    from lf_data.cli import main as lf

    adapter = tmp_path / "saves" / "run"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    code = lf(["export", "model_name_or_path=/no/such/model", f"adapter_name_or_path={adapter}",
               f"export_dir={tmp_path / 'saves'}", "overwrite_export_dir=true"])
    assert code == 1
    assert (adapter / "adapter_config.json").is_file()
    assert capsys.readouterr().err


def test_a_full_disk_is_one_line_and_keeps_the_previous_export(tmp_path, tiny_llama, adapter, monkeypatch, capsys):
    import lf_models.export as export

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")  # the previous export, which must survive

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export, "_replace_dir", full)
    assert lf(["export", f"model_name_or_path={tiny_llama}", f"adapter_name_or_path={adapter}", f"export_dir={out}",
               "overwrite_export_dir=true"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "No space left on device" in errors[0] and f"{out} is as it was." in errors[0]
    assert (out / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

