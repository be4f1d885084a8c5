"""`pip install lf-data`: the templates, the data pipeline and the `lf` command, and no torch."""

from __future__ import annotations

import importlib.util
import json

from alone_helpers import LF_PACKAGES, assert_from_wheel, installed, lf, only_in

pytestmark = only_in("lf-data")

MESSAGES = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Lumen."}]


def test_lf_data_alone_brings_no_torch_and_no_sibling():
    import lf_data

    assert_from_wheel(lf_data)
    have = installed()
    assert "torch" not in have and importlib.util.find_spec("torch") is None
    assert {"peft", "accelerate", "trl", "gradio", "fastapi"}.isdisjoint(have)
    assert [name for name in LF_PACKAGES if name in have] == ["lf-data"]


def test_render_with_a_tokenizer_only_folder(tiny_tokenizer_dir, tmp_path):
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps(MESSAGES))
    result = lf("data", "render", "--template", "chatml", "--tokenizer", str(tiny_tokenizer_dir),
                "--messages", str(messages))
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert rendered["template"] == "chatml"
    assert rendered["text"] == ("<|im_start|>user\nWho are you?<|im_end|>\n"
                                "<|im_start|>assistant\nI am Lumen.<|im_end|>\n")
    assert rendered["trained_text"] == "I am Lumen.<|im_end|>\n"


def test_version_and_missing_commands_name_the_package_to_install():
    version = lf("version")
    assert version.returncode == 0, version.stdout + version.stderr
    lines = version.stdout.splitlines()
    assert lines[0] == f"lf-data    {installed()['lf-data']}"
    assert lines[1:6] == [f"{name:<10} not installed" for name in LF_PACKAGES[1:]]
    train = lf("train", "x.yaml")
    assert train.returncode == 2
    assert train.stderr.strip() == "lf train is provided by lf-train, which is not installed: pip install lf-train"
