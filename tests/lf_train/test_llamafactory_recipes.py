"""LlamaFactory recipes run unchanged: every key of LlamaFactory 0.9.5 has an answer in LF
(`lf_data.llamafactory_keys`, docs/llamafactory-keys.md), LlamaFactory-style recipes written here pass
`--check` or are refused in one line for the hardware they need, and the conventions those recipes rely
on work: predict-only runs, resume_from_checkpoint: true, ref_model, eval_on_each_dataset, the
profiler, tool_format and preserve_thinking."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_data.llamafactory_keys import KEYS, translate

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "tests" / "fixtures" / "llamafactory_recipes").glob("*.yaml"))


def _header(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


@pytest.fixture(scope="module")
def lora_adapter(tiny_llama, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny Llama, saved as peft saves it (what a LlamaFactory user passes)."""
    from model_helpers import save_lora_adapter

    return save_lora_adapter(tiny_llama, tmp_path_factory.mktemp("adapter"))


def _localise(path: Path, tmp_path: Path, tiny_llama: Path, data_dir: Path, adapter: Path) -> Path:
    text = (path.read_text().replace("@MODEL@", str(tiny_llama)).replace("@ADAPTER@", str(adapter))
            .replace("@DATA@", str(data_dir)).replace("@OUT@", str(tmp_path / "out")))
    recipe = yaml.safe_load(text)
    recipe.setdefault("dataset_dir", str(data_dir))
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(recipe))
    return out


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_llamafactory_style_recipes_pass_the_check_or_name_the_hardware(recipe, tmp_path, tiny_llama, more_data,
                                                                         lora_adapter, capsys):
    header = _header(recipe)
    path = _localise(recipe, tmp_path, tiny_llama, more_data, lora_adapter)
    code = lf([header["command"], str(path), "--check"])
    err = capsys.readouterr().err
    if header["expect"] == "ok":
        assert code == 0, err
    else:
        expected = header["expect"].removeprefix("refused:").strip()
        assert code == 1 and expected in err, err
        assert "unknown" not in err and len(err.strip().splitlines()) == 1, err


def test_the_key_table_is_current_and_answers_every_llamafactory_key():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "key_table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = (REPO / "docs" / "llamafactory-keys.md").read_text()
    assert len([line for line in table.splitlines() if line.startswith("| `")]) == len(KEYS) >= 240
    assert "| unknown |" not in table


def test_translation_renames_ignores_and_refuses(caplog):
    known = {"use_liger_kernel", "special_tokens_in_content", "num_beams", "template"}
    with caplog.at_level(logging.INFO, logger="lf_data.llamafactory_keys"):
        out = translate({"enable_liger_kernel": True, "split_special_tokens": True, "low_cpu_mem_usage": True,
                         "use_unsloth": False, "template": "chatml", "export_dir": "x"}, known, "train")
    assert out == {"use_liger_kernel": True, "special_tokens_in_content": False, "template": "chatml"}
    assert "low_cpu_mem_usage" in caplog.text and "export_dir" in caplog.text
    assert translate({"split_special_tokens": False}, known, "chat") == {"special_tokens_in_content": True}
    with pytest.raises(ConfigError, match="use_unsloth: True .*unsloth"):
        translate({"use_unsloth": True}, known, "train")
    with pytest.raises(ConfigError, match="enable_liger_kernel .* also sets"):
        translate({"enable_liger_kernel": True, "use_liger_kernel": False}, known, "train")
    # LlamaFactory's chat parser has no training group: a training key stays unknown there, as in LlamaFactory
    assert translate({"enable_torch_profiler": True}, known, "chat") == {"enable_torch_profiler": True}


def test_resume_from_checkpoint_true_picks_the_last_checkpoint(base_config, tmp_path):
    from lf_train.plan import check_train_config

    out = Path(base_config["output_dir"])
    with pytest.raises(ConfigError, match="resume_from_checkpoint: true .* has none"):
        check_train_config({**base_config, "resume_from_checkpoint": True})
    for step in (10, 20):
        (out / f"checkpoint-{step}").mkdir(parents=True)
    plan = check_train_config({**base_config, "resume_from_checkpoint": True})
    assert plan.resume_from_checkpoint == str(out / "checkpoint-20")
    assert check_train_config({**base_config, "resume_from_checkpoint": "false"}).resume_from_checkpoint == \
        str(out / "checkpoint-20")  # false is the default: an interrupted run still resumes, as before


def test_predict_only_recipe_generates_and_scores(tmp_path, tiny_llama, data_dir, lora_adapter):
    path = _localise(REPO / "tests" / "fixtures" / "llamafactory_recipes" / "predict.yaml", tmp_path, tiny_llama,
                     data_dir, lora_adapter)
    recipe = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**recipe, "max_samples": 3, "max_new_tokens": 4}))
    assert lf(["train", str(path)]) == 0
    out = Path(recipe["output_dir"])
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"prompt", "predict", "label"} <= set(row) for row in rows)
    scores = json.loads((out / "predict_results.json").read_text())
    assert {"predict_bleu-4", "predict_rouge-l"} <= set(scores)
    assert not list(out.glob("checkpoint-*")) and not (out / "adapter_model.safetensors").exists()  # nothing trained


def test_ref_model_as_the_base_gives_the_adapter_off_reference(base_config, write_config, more_data, tmp_path):
    """ref_model pointing at the base model is the same reference as LoRA's adapter switched off: equal losses."""
    from train_helpers import LOSS_TOLERANCE, losses

    config = {**base_config, "stage": "dpo", "dataset": "pref", "max_steps": 4, "save_steps": 4,
              "learning_rate": 1.0e-3}
    assert lf(["train", str(write_config(**config))]) == 0
    adapter_off = losses(config["output_dir"])
    config.update(output_dir=str(tmp_path / "ref"), ref_model=config["model_name_or_path"])
    assert lf(["train", str(write_config(**config))]) == 0
    assert losses(config["output_dir"]) == pytest.approx(adapter_off, abs=LOSS_TOLERANCE)
    assert adapter_off[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy equals reference at the start


def test_a_missing_ref_model_stops_before_anything_loads(base_config, write_config, more_data, tmp_path, capsys):
    config = {**base_config, "stage": "dpo", "dataset": "pref", "ref_model": str(tmp_path / "no-such-model")}
    assert lf(["train", str(write_config(**config))]) == 1
    assert "does not exist" in capsys.readouterr().err and not Path(config["output_dir"]).exists()


def test_eval_on_each_dataset_and_the_profiler(base_config, write_config, more_data, tmp_path):
    config = {**base_config, "max_steps": 2, "save_steps": 2, "eval_dataset": "identity,chats",
              "eval_on_each_dataset": True, "enable_torch_profiler": True, "profiler_with_stack": False,
              "compute_accuracy": True, "include_effective_tokens_per_second": True}
    assert lf(["train", str(write_config(**config))]) == 0
    out = Path(config["output_dir"])
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_identity_loss", "eval_chats_loss"} <= set(metrics)
    assert 0.0 <= metrics["eval_identity_accuracy"] <= 1.0 and 0.0 <= metrics["eval_chats_accuracy"] <= 1.0
    assert list((out / "profiler").glob("*.pt.trace.json")), "no profiler trace written"
    train = json.loads((out / "train_results.json").read_text())
    # 2 steps of 4 rows = one epoch of the 8 identity rows: every real token once, over the run's time
    assert train["effective_tokens_per_sec"] > 0


def test_token_accuracy_counts_answer_tokens_only():
    import numpy as np
    from transformers import EvalPrediction

    from lf_train.stages.sft import token_accuracy

    labels = np.array([[-100, -100, 5, 6, 7]])
    predicted = np.array([[0, 5, 6, 1, 9]])  # position t predicts token t+1: right, right, wrong (last is unused)
    assert token_accuracy(EvalPrediction(predicted, labels))["accuracy"] == pytest.approx(2 / 3)


def test_loraplus_embedding_matrices_get_their_own_learning_rate(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from lf_train.optimizers import loraplus_optimizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    optimizer = loraplus_optimizer(model, TrainingArguments(output_dir="unused", learning_rate=1e-3), 16, 3e-6)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    seen = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            seen[name] = lr_of[id(param)]
    embedding = {n: lr for n, lr in seen.items() if "lora_embedding" in n}
    assert embedding and set(embedding.values()) == {3e-6}
    assert all(lr == pytest.approx(1.6e-2) for n, lr in seen.items() if "lora_B" in n)


def test_train_from_scratch_and_moe_aux_loss_coef(tiny_llama):
    import torch
    from safetensors.torch import load_file

    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model
    from lf_models.precision import choose_precision

    saved = load_file(str(tiny_llama / "model.safetensors"))
    torch.manual_seed(1)
    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama), train_from_scratch=True),
                       FinetuningArguments(finetuning_type="full"), choose_precision(), True)
    weights = dict(model.named_parameters())
    assert set(saved) == set(weights)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert weights[q].shape == saved[q].shape and not torch.equal(weights[q].detach(), saved[q])
    from transformers import AutoModelForCausalLM, MixtralConfig

    moe = tiny_llama.parent / "tiny-mixtral"
    if not moe.exists():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(MixtralConfig(
            vocab_size=len(saved["model.embed_tokens.weight"]),
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
            num_local_experts=2, num_experts_per_tok=1)).save_pretrained(moe)
    routed = load_model(ModelArguments(model_name_or_path=str(moe), moe_aux_loss_coef=0.05),
                        FinetuningArguments(finetuning_type="full"), choose_precision(), True)
    assert routed.config.router_aux_loss_coef == 0.05 and routed.config.output_router_logits is True
    ids = torch.tensor([[1, 2, 3, 4]])
    out = routed(input_ids=ids, labels=ids)
    assert out.aux_loss is not None and out.loss > routed(input_ids=ids, labels=ids, output_router_logits=False).loss
    with pytest.raises(ConfigError, match="moe_aux_loss_coef applies to mixture-of-experts"):
        load_model(ModelArguments(model_name_or_path=str(tiny_llama), moe_aux_loss_coef=0.01),
                   FinetuningArguments(finetuning_type="full"), choose_precision(), True)
    with pytest.raises(ConfigError, match="train_from_scratch starts from random weights"):
        load_model(ModelArguments(model_name_or_path=str(tiny_llama), train_from_scratch=True, quantization_bit=4),
                   FinetuningArguments(), choose_precision(), True)


def test_tool_format_and_preserve_thinking_change_the_template(tiny_tokenizer):
    from lf_data.args import DataArguments
    from lf_data.templates import get_template, with_options

    qwen3 = get_template("qwen3")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>hmm</think>hello"},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]
    kept = with_options(qwen3, DataArguments(preserve_thinking=True))
    history = lambda template: "".join(p + r for p, r in template.render_pairs(messages, None, tiny_tokenizer))  # noqa: E731
    assert "hmm" not in history(qwen3) and "hmm" in history(kept)
    assert with_options(qwen3, DataArguments(tool_format="llama3")).tool_format == "llama3"
    briefed = with_options(get_template("chatml"), DataArguments(default_system="Be brief."))
    assert "Be brief." in "".join(p for p, _ in briefed.render_pairs(messages[:2], None, tiny_tokenizer))
    with pytest.raises(ConfigError, match="tool_format 'nope'"):
        DataArguments(tool_format="nope")


def test_default_system_reaches_the_exported_chat_template(tiny_llama, lora_adapter, tmp_path):
    """LlamaFactory's data key default_system: the exported tokenizer template and Modelfile carry it."""
    from lf_models.export import check_export, modelfile

    plan = check_export({"model_name_or_path": str(tiny_llama), "adapter_name_or_path": str(lora_adapter),
                         "template": "chatml", "default_system": "Be brief.", "export_dir": str(tmp_path / "x")})
    assert plan.chat_template.default_system == "Be brief."
    from transformers import AutoTokenizer

    assert 'SYSTEM """Be brief."""' in modelfile(plan.chat_template, AutoTokenizer.from_pretrained(tiny_llama))
