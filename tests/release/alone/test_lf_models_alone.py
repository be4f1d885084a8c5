"""`pip install lf-models`: loading, adapters and export on torch; no serving, training or UI stack."""

from __future__ import annotations

from alone_helpers import LF_PACKAGES, assert_from_wheel, installed, lf, only_in

pytestmark = only_in("lf-models")


def test_lf_models_alone_brings_torch_and_peft_but_no_serving_training_or_ui():
    import lf_models

    assert_from_wheel(lf_models)
    have = installed()
    assert {"torch", "peft", "transformers", "safetensors"} <= set(have)
    assert {"fastapi", "uvicorn", "trl", "deepspeed", "gradio", "bitsandbytes"}.isdisjoint(have)
    assert [name for name in LF_PACKAGES if name in have] == ["lf-data", "lf-models"]
    assert lf("version").returncode == 0


def test_export_command_is_there_and_checks_its_config(tiny_llama, tmp_path):
    result = lf("export", f"model_name_or_path={tiny_llama}", f"export_dir={tmp_path / 'out'}", "--check")
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
