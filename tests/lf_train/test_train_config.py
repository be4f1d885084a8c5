"""`lf train`'s config path: every bad value stops before torch is imported, `--check` says what would
run, and a checkpoint is never resumed (or a folder deleted) by a config that does not belong to it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import yaml

from lf_data.cli import main as lf
from lf_data.config import read_config
from lf_data.errors import ConfigError
from lf_train.plan import check_train_config

RECIPE = "examples/quickstart.yaml"


@pytest.mark.parametrize(("overrides", "message"), [
    (["stage=ppo", "max_steps=2"], "needs reward_model"),
    (["stage=ppo", "finetuning_type=full"], "needs finetuning_type: lora"),
    (["stage=ppo_x"], "Did you mean 'ppo'"),
    (["learning_rate=0"], "learning_rate=0.0 must be above 0"),
    (["per_device_train_batch_size=0"], "per_device_train_batch_size=0 must be at least 1"),
    (["gradient_accumulation_steps=0"], "gradient_accumulation_steps=0 must be at least 1"),
    (["num_train_epochs=-1"], "num_train_epochs=-1.0 must be at least 0"),
    (["save_steps=0"], "save_steps=0.0 must be above 0"),
    (["logging_steps=-5"], "logging_steps=-5.0 must be above 0"),
    (["max_grad_norm=-1"], "max_grad_norm=-1.0 must be at least 0"),
    (["weight_decay=-0.1"], "weight_decay=-0.1 must be at least 0"),
    (["lora_alpha=-16"], "lora_alpha=-16 must be above 0"),
    (["lora_rank=0"], "lora_rank=0 must be at least 1"),
    (["lora_dropout=1"], "lora_dropout=1.0 must be at least 0 and below 1"),
    (["cutoff_len=1"], "cutoff_len=1 must be at least 2"),
    (["warmup_ratio=1.5"], "warmup_ratio=1.5 must be at least 0 and below 1"),
    (["finetuning_type=full", "use_galore=true", "galore_layerwise=true", "gradient_accumulation_steps=abc"],
     "gradient_accumulation_steps must be an integer, got 'abc'"),
    (["quantization_bit=4", "finetuning_type=full"], "a quantised model trains only through adapters"),
    (["do_predict=true", "stage=ppo", "eval_dataset=identity"], "do_predict needs stage: pt or sft"),
])
def test_bad_values_stop_before_anything_heavy(tmp_path, overrides, message):
    config = read_config(RECIPE, [f"output_dir={tmp_path / 'out'}", *overrides])
    with pytest.raises(ConfigError, match=message):
        check_train_config(config, RECIPE)


def test_config_errors_answer_without_importing_torch(tmp_path):
    """The process-level promise: a typo is reported by `lf train` before torch (or transformers) loads."""
    code = ("import sys; from lf_data.cli import main; "
            f"rc = main(['train', {RECIPE!r}, 'output_dir={tmp_path / 'out'}', 'lora_rnak=4']); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False", "False"], done.stderr
    assert "unknown config key 'lora_rnak'" in done.stderr and "Did you mean 'lora_rank'?" in done.stderr


def test_lf_train_without_arguments_prints_its_usage(capsys):
    with pytest.raises(SystemExit) as exited:
        lf(["train"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lf train") and "give a YAML config file" in err


def test_check_prints_what_would_run_and_writes_nothing(base_config, write_config, capsys):
    config = write_config(**base_config)
    assert lf(["train", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"lf train: {config} is valid." in out
    assert "stage sft, lora tuning of" in out and f"output_dir {base_config['output_dir']}: a new run" in out
    assert "batch 4 x 1 accumulation, learning rate 0.03, 30 steps" in out
    resolved = yaml.safe_load(out.split("resolved config:\n", 1)[1])
    assert resolved["lora_rank"] == 8 and resolved["per_device_train_batch_size"] == 4
    from pathlib import Path

    assert not Path(base_config["output_dir"]).exists()


def test_allow_extra_args_lets_a_recipe_carry_keys_of_its_own(base_config, write_config, monkeypatch, capsys):
    config = write_config(**base_config, experiment_note="baseline v2")
    assert lf(["train", str(config), "--check"]) == 1
    assert "unknown config key 'experiment_note'" in capsys.readouterr().err
    monkeypatch.setenv("ALLOW_EXTRA_ARGS", "1")  # LlamaFactory's switch for such recipes
    assert lf(["train", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert "is valid." in out and "experiment_note" not in out.split("resolved config:\n", 1)[1]


def _interrupted_run(tmp_path, **saved):
    """An output_dir as a killed run leaves it: its resolved config and a checkpoint."""
    out = tmp_path / "out"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "lf_config.yaml").write_text(yaml.safe_dump(saved))
    return out


def test_a_worker_torchrun_restarted_resumes_even_with_overwrite_output_dir(tmp_path, base_config, monkeypatch):
    """Its first attempt cleared output_dir and saved checkpoints; the restart must resume them, not start over."""
    out = _interrupted_run(tmp_path, **{**base_config, "lora_target": ["all"]})
    config = {**base_config, "output_dir": str(out), "overwrite_output_dir": True}
    assert check_train_config(dict(config)).clear_output_dir  # a fresh launch overwrites
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    plan = check_train_config(dict(config))
    assert plan.resume_from_checkpoint == str(out / "checkpoint-5") and not plan.clear_output_dir


def test_a_checkpoint_of_another_run_is_refused_before_loading(tmp_path, base_config):
    out = _interrupted_run(tmp_path, **{**base_config, "lora_target": ["all"], "dataset": ["identity"]})
    config = {**base_config, "output_dir": str(out), "lora_rank": 16}
    with pytest.raises(ConfigError, match=r"holds a checkpoint of another run \(lora_rank: 8 there, 16 now\)"):
        check_train_config(config)
    assert yaml.safe_load((out / "lf_config.yaml").read_text())["lora_rank"] == 8  # untouched


def test_a_changed_schedule_resumes_with_a_warning(tmp_path, base_config, caplog):
    out = _interrupted_run(tmp_path, **{**base_config, "lora_target": ["all"], "dataset": ["identity"]})
    with caplog.at_level(logging.INFO, logger="lf_train"):
        plan = check_train_config({**base_config, "output_dir": str(out), "learning_rate": 1e-3, "logging_steps": 2})
    assert plan.resume_from_checkpoint == str(out / "checkpoint-5")
    assert "resuming with learning_rate=0.001 (the checkpoint was trained with 0.03)" in caplog.text
    assert "resuming with changed keys: logging_steps" in caplog.text


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, base_config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match=r"is not an LF run \(no lf_config.yaml\).*thesis.tex"):
        check_train_config({**base_config, "output_dir": str(out), "overwrite_output_dir": True})
    assert (out / "thesis.tex").read_text() == "years of work"
    (out / "thesis.tex").unlink()
    (out / "lf_config.yaml").write_text(json.dumps(base_config))  # an LF run: replacing it is what was asked
    assert check_train_config({**base_config, "output_dir": str(out), "overwrite_output_dir": True}).clear_output_dir


def test_media_data_is_refused_before_loading(tmp_path, base_config, data_dir, tiny_qwen2_vl):
    (data_dir / "pics.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "<image>What is it?"},
                                                                  {"role": "assistant", "content": "A cat."}],
                                                     "images": ["cat.png"]}]))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["pics"] = {"file_name": "pics.json", "formatting": "sharegpt", "columns": {"messages": "messages",
                                                                                     "images": "images"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"has images but model .* is a text model"):  # the tiny Llama
        check_train_config({**base_config, "dataset": "pics"})
    vlm = {**base_config, "dataset": "pics", "model_name_or_path": str(tiny_qwen2_vl)}
    check_train_config(vlm)  # a VLM takes them
    (tmp_path / "value_head.safetensors").touch()  # a reward model's folder, as far as the check looks
    with pytest.raises(ConfigError, match="has images, which stage ppo does not feed to the model"):
        check_train_config({**vlm, "stage": "ppo", "reward_model": str(tmp_path)})
    info["sounds"] = {**info["pics"], "columns": {"messages": "messages", "audios": "images"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"has audios but model .* is a multimodal model that takes images "
                                          r"and videos only"):
        check_train_config({**vlm, "dataset": "sounds"})


def test_what_the_model_or_machine_cannot_do_stops_before_loading(base_config, tmp_path):
    from lf_train.plan import parse_train_config

    with pytest.raises(ConfigError, match=r"lora_target names \['qkv_proj'\] that this model does not have; its "
                                          r"linear layers are .*q_proj"):
        parse_train_config({**base_config, "lora_target": "q_proj,qkv_proj"})  # an empty meta-device copy
    with pytest.raises(ConfigError, match="report_to names wandb, which is not installed here"):
        parse_train_config({**base_config, "report_to": "wandb"})
    with pytest.raises(ConfigError, match="output_dir '/proc/lf-run' cannot be written"):
        check_train_config({**base_config, "output_dir": "/proc/lf-run"})
    assert parse_train_config({**base_config, "lora_target": "q_proj,v_proj"}).finetuning.lora_target == ["q_proj",
                                                                                                          "v_proj"]


def test_liger_kernels_without_the_package_or_a_gpu_are_refused_before_loading(base_config, monkeypatch):
    """transformers would raise only in the Trainer, after the weights load; Liger's Triton kernels need a GPU."""
    import transformers.utils

    from lf_train.plan import parse_train_config

    with pytest.raises(ConfigError, match=r"use_liger_kernel: true needs liger-kernel \(`pip install lf-train\[liger\]`"):
        parse_train_config({**base_config, "use_liger_kernel": True})
    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: True)
    with pytest.raises(ConfigError, match="Triton kernels for GPUs and this machine has none"):
        parse_train_config({**base_config, "use_liger_kernel": True})


def test_quiet_drops_the_trainers_per_step_printout(base_config, tiny_tokenizer, monkeypatch):
    from types import SimpleNamespace

    import torch
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from lf_train.collators import SupervisedCollator
    from lf_train.plan import parse_train_config
    from lf_train.stages.common import build_trainer

    plan = parse_train_config(base_config)  # disable_tqdm: the Trainer prints each step's dict instead of a bar
    data = SimpleNamespace(train_dataset=[{"input_ids": [1, 2], "labels": [1, 2]}], eval_dataset=None)
    shown = {}
    for level in ("info", "quiet"):
        monkeypatch.setenv("LF_VERBOSITY", level)
        trainer = build_trainer(Trainer, torch.nn.Linear(2, 2), tiny_tokenizer, data, plan, [], SupervisedCollator)
        shown[level] = any(isinstance(c, PrinterCallback) for c in trainer.callback_handler.callbacks)
    assert shown == {"info": True, "quiet": False}


def test_a_full_disk_while_training_is_one_line(base_config, write_config, monkeypatch, capsys):
    import errno
    import os

    from lf_train.stages import Stage

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Stage, "run", full)  # as a checkpoint save on a full disk would fail
    assert lf(["train", str(write_config(**base_config))]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err and "No space left on device" in errors[0]
    assert "The last complete checkpoint is kept" in errors[0]


def test_checkpointing_a_model_that_cannot_is_refused_before_weights_load(tiny_tokenizer_dir, base_config,
                                                                          write_config, tmp_path, capsys):
    """openai-gpt's class has no gradient checkpointing: asked for, the run stops on the config alone (the
    folder holds no weights); not asked for, it would train without (lf_train.run.choose_checkpointing)."""
    import shutil

    from transformers import AutoConfig

    from lf_models.args import ModelArguments
    from lf_models.loader import class_checkpointing, resolve_model

    folder = tmp_path / "gpt"
    shutil.copytree(tiny_tokenizer_dir, folder)
    AutoConfig.for_model("openai-gpt", n_layer=1, n_embd=32, n_head=2).save_pretrained(folder)
    base_config.update(model_name_or_path=str(folder), gradient_checkpointing=True)
    assert lf(["train", str(write_config(**base_config))]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("gradient_checkpointing: true, but OpenAIGPTLMHeadModel does not support it; remove "
                        "gradient_checkpointing.") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    llama = ModelArguments(model_name_or_path=str(folder.parent / "llama"))
    AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                         num_attention_heads=2).save_pretrained(folder.parent / "llama")
    assert class_checkpointing(llama, resolve_model(llama)) == ("LlamaForCausalLM", True)
