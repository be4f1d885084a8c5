"""`lf data check` and `lf data render`, run as a user runs them."""

import json

import yaml

from lf_data.cli import main as lf
from lf_data.render import render_conversation


def test_data_check_reports_rows_problems_lengths_and_an_example(tiny_llama, data_dir, tmp_path, capsys):
    rows = json.loads((data_dir / "identity.json").read_text())
    rows[3]["output"] = ""
    (data_dir / "identity.json").write_text(json.dumps(rows))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_llama), "dataset": "identity,chats",
                                      "dataset_dir": str(data_dir), "template": "chatml", "cutoff_len": 40,
                                      "output_dir": str(tmp_path / "out"), "learning_rate": 1e-4}))
    assert lf(["data", "check", str(config)]) == 1  # an invalid row: training would refuse this data
    out = capsys.readouterr().out
    assert "rows read     10" in out
    assert "invalid       1" in out
    assert "kept          9" in out
    assert f"{data_dir / 'identity.json'}:3: empty response (column 'output')" in out
    assert "truncated by cutoff_len: 3 of 9" in out and "max 40" in out  # long rows are cut to 40 tokens
    assert "trained tokens: " in out and "%" in out
    assert "⟦I am Lumen, made by the LF team.<|im_end|>\n⟧" in out
    assert not (tmp_path / "out").exists()

    assert lf(["data", "check", str(config), "skip_invalid=true"]) == 0
    capsys.readouterr()


def test_data_render_prints_ids_mask_and_text(tiny_llama, tiny_tokenizer, tmp_path, capsys):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
                {"role": "assistant", "content": "I am Lumen."}]
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(messages))
    assert lf(["data", "render", "--template", "chatml", "--tokenizer", str(tiny_llama), "--messages", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
                              "<|im_start|>assistant\nI am Lumen.<|im_end|>\n")
    assert result["trained_text"] == "I am Lumen.<|im_end|>\n"
    assert len(result["input_ids"]) == len(result["labels"]) == len(result["trained"])
    assert result == render_conversation("chatml", tiny_tokenizer, messages)

    path.write_text(json.dumps(messages[:2]))
    assert lf(["data", "render", "--template", "chatml", "--tokenizer", str(tiny_llama), "--messages", str(path),
               "--add-generation-prompt"]) == 0
    prompt = json.loads(capsys.readouterr().out)
    assert prompt["text"].endswith("<|im_start|>assistant\n") and not any(prompt["trained"])


def test_data_render_bad_input(tiny_llama, tmp_path, capsys):
    path = tmp_path / "messages.json"
    path.write_text("[{\"role\": \"user\", \"content\": \"hi\"")
    assert lf(["data", "render", "--tokenizer", str(tiny_llama), "--messages", str(path), "--template", "chatml"]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    path.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    assert lf(["data", "render", "--tokenizer", str(tiny_llama), "--messages", str(path), "--template", "chatml"]) == 1
    assert "without it, with an assistant message" in capsys.readouterr().err


def test_data_check_warns_when_the_template_differs_from_the_tokenizers_own(tiny_llama, data_dir, tmp_path, capsys):
    import shutil

    from lf_data.templates import TEMPLATES

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATES["chatml"].to_jinja()  # the model ships plain ChatML
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    run = tmp_path / "run.yaml"
    values = {"model_name_or_path": str(model), "dataset": "identity", "dataset_dir": str(data_dir), "template": "qwen"}
    run.write_text(yaml.safe_dump(values))
    assert lf(["data", "check", str(run)]) == 0
    out = capsys.readouterr().out
    assert "warning: template 'qwen' differs from the tokenizer's own chat template: one turn, at character 12" in out
    assert "You are Qwen" in out
    run.write_text(yaml.safe_dump({**values, "template": "chatml"}))
    assert lf(["data", "check", str(run)]) == 0
    assert "warning" not in capsys.readouterr().out
