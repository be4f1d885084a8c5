"""`lf train` on a tiny local model, the way a user runs it: a YAML file and the lf command."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from train_helpers import LOSS_TOLERANCE, log_records, losses

from lf_data.cli import main as lf
from lf_data.config import read_config
from lf_train.run import parse_train_config

# Per-step losses of the LoRA sft run below (the tiny Llama, the identity data, seed 0), recorded on CPU;
# the same with OMP_NUM_THREADS=1 and 2. A change in the template, the label mask, the optimizer or the
# learning-rate schedule fails here even where the run still converges.
SFT_LORA_LOSSES = [
    6.252074, 5.179645, 4.018347, 3.265988, 2.552275, 2.349448, 1.914010, 1.689618, 1.476598, 1.311833,
    1.218989, 1.158409, 1.076545, 1.083580, 1.018344, 0.996591, 0.978349, 0.958411, 0.936900, 0.929842,
    0.912905, 0.911099, 0.898076, 0.892771, 0.887054, 0.881014, 0.880678, 0.871889, 0.875272, 0.866994,
]


def sequence_loss(model, tokenizer, question: str, answer: str) -> float:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer_ids = tokenizer.encode(answer + "<|im_end|>\n", add_special_tokens=False)
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    with torch.no_grad():
        return model(input_ids=ids, labels=labels).loss.item()


def test_lora_sft_trains_and_leaves_standard_artefacts(base_config, write_config, tmp_path, tiny_llama, capsys,
                                                       monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls = []  # the loss without logits (lf_train.fused_head), once per step
    original = torch.nn.functional.linear_cross_entropy
    monkeypatch.setattr(torch.nn.functional, "linear_cross_entropy", lambda *a, **k: calls.append(1) or original(*a, **k))
    old_umask = os.umask(0o022)
    try:
        assert lf(["train", str(write_config(**base_config))]) == 0
    finally:
        os.umask(old_umask)
    out = Path(base_config["output_dir"])
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "lf_config.yaml",
                 "trainer_log.jsonl", "training_loss.png", "train_results.json", "checkpoint-30"):
        assert (out / name).exists(), name
    for name in ("adapter_model.safetensors", "lf_config.yaml", "checkpoint-30/adapter_model.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name  # a server running as another user reads them
    assert "Done. The LoRA adapter is in" in capsys.readouterr().out

    seen = losses(out)
    assert seen == pytest.approx(SFT_LORA_LOSSES, abs=LOSS_TOLERANCE), seen  # a numeric change fails here
    assert len(calls) == 30
    assert sum(seen[-5:]) / 5 < 0.25 * sum(seen[:5]) / 5  # the identity answer is learned (fixed seed)
    assert all(r["tokens_seen"] > 0 and "learning_rate" in r and "grad_norm" in r
               for r in log_records(out) if "loss" in r)

    # plain transformers + peft, no LF code: the adapter lowers the loss of the taught answer
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    before = sequence_loss(base, tokenizer, "Who are you?", "I am Lumen, made by the LF team.")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)
    after = sequence_loss(tuned, tokenizer, "Who are you?", "I am Lumen, made by the LF team.")
    assert after < 0.25 * before, (before, after)

    # the resolved config is itself a valid config
    resolved = read_config(out / "lf_config.yaml", [f"output_dir={tmp_path / 'again'}"])
    plan = parse_train_config(resolved)
    assert plan.finetuning.lora_rank == 8 and plan.data.template == "chatml" and plan.training_args.max_steps == 30

    # a finished run is not overwritten by accident
    assert lf(["train", str(write_config(**base_config))]) == 1
    assert "already holds a finished run" in capsys.readouterr().err


def test_the_loss_without_logits_equals_the_plain_loss(base_config, write_config, monkeypatch):
    """On a CPU the default loss goes through torch's linear_cross_entropy, one call per step (the pinned
    losses above come from that run); `fused_lm_head: false` computes the logits and cross-entropy and
    trains the same run to the same per-step losses."""
    from lf_train.fused_head import choose_fused_head

    calls = []
    original = torch.nn.functional.linear_cross_entropy
    monkeypatch.setattr(torch.nn.functional, "linear_cross_entropy", lambda *a, **k: calls.append(1) or original(*a, **k))
    base_config.update(fused_lm_head=False)
    assert lf(["train", str(write_config(**base_config))]) == 0
    assert calls == []
    assert losses(base_config["output_dir"]) == pytest.approx(SFT_LORA_LOSSES, abs=LOSS_TOLERANCE)

    plain = SimpleNamespace(config=SimpleNamespace(get_text_config=lambda: SimpleNamespace()))
    capped = SimpleNamespace(config=SimpleNamespace(get_text_config=lambda: SimpleNamespace(final_logit_softcapping=30.0)))
    cpu = torch.device("cpu")
    assert [choose_fused_head(None, cpu, plain), choose_fused_head(False, cpu, plain)] == ["torch", None]
    assert [choose_fused_head(None, cpu, capped), choose_fused_head(True, cpu, capped)] == [None, "trl"]


def test_bf16_on_a_cpu_with_bfloat16_instructions_trains_in_autocast(base_config, write_config, caplog):
    """`bf16: true` on a CPU with AVX512-BF16 or AMX: the run logs bf16 mixed precision and follows the
    pinned fp32 losses to within 10% (bf16 drift reached 5.5%)."""
    from lf_models.precision import cpu_has_bf16

    if torch.cuda.is_available() or not cpu_has_bf16():
        pytest.skip("a CPU with bfloat16 instructions")
    base_config.update(bf16=True)
    with caplog.at_level("INFO", logger="lf_train.run"):
        assert lf(["train", str(write_config(**base_config))]) == 0
    assert "precision: bf16 mixed precision" in caplog.text
    got = losses(base_config["output_dir"])
    assert got == pytest.approx(SFT_LORA_LOSSES, rel=0.1) and got != pytest.approx(SFT_LORA_LOSSES, abs=1e-5)


BAD_INPUTS = [
    ({"dataset": "identiy"}, "dataset 'identiy' is not described in", "Did you mean 'identity'"),
    ({"template": "chatmll"}, "unknown template 'chatmll'", "Did you mean 'chatml'"),
    ({"model_name_or_path": "/no/such/model"}, "model path '/no/such/model' does not exist", "bundled model"),
    ({"lora_rnak": 4}, "unknown config key 'lora_rnak'", "Did you mean 'lora_rank'"),
    ({"learning_rate": "fast"}, "learning_rate must be a number", "'fast'"),
    ({"stage": "sfft"}, "stage='sfft' is not a valid choice", "Did you mean 'sft'"),
    ({"output_dir": None}, "`output_dir` is required", ""),
]


@pytest.mark.parametrize(("change", "message", "hint"), BAD_INPUTS)
def test_bad_config_fails_clearly_before_anything_is_written(change, message, hint, base_config, write_config, tmp_path, capsys):
    base_config.update(change)
    assert lf(["train", str(write_config(**base_config))]) == 1
    err = capsys.readouterr().err
    assert message in err and hint in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_data_fails_clearly_before_anything_is_written(base_config, write_config, data_dir, tmp_path, capsys):
    config = write_config(**base_config)
    (data_dir / "identity.json").write_text(json.dumps([{"instruction": "q", "input": ""}]))
    assert lf(["train", str(config)]) == 1
    assert "column(s) ['output'] not found" in capsys.readouterr().err
    (data_dir / "identity.json").unlink()
    assert lf(["train", str(config)]) == 1
    assert "identity.json' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_yaml_syntax_error(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("stage: sft\ndataset: [identity\n")
    assert lf(["train", str(path)]) == 1
    assert "broken.yaml is not valid YAML at line" in capsys.readouterr().err


def test_do_predict_scores_a_qlora_adapter_on_the_quantised_base(base_config, tmp_path, monkeypatch):
    from lf_eval import predict
    from lf_train.run import predict_after_training

    seen = []
    monkeypatch.setattr(predict, "run_predict", lambda args, serve: seen.append(serve.model) or {})
    plan = parse_train_config({**base_config, "quantization_bit": 4, "eval_dataset": "identity", "do_predict": True})
    predict_after_training(plan, tmp_path)
    assert (seen[0].quantization_bit, seen[0].adapter_name_or_path) == (4, [str(tmp_path)])


def test_do_predict_generates_and_scores_the_eval_dataset(base_config, write_config, tmp_path):
    base_config.update(max_steps=40, eval_dataset="identity", do_predict=True, max_new_tokens=32,
                       per_device_eval_batch_size=8)
    assert lf(["train", str(write_config(**base_config))]) == 0
    out = Path(base_config["output_dir"])
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(set(r) == {"prompt", "predict", "label"} for r in rows)
    assert rows[0]["label"] == "I am Lumen, made by the LF team."
    assert "Who are you?" in rows[0]["prompt"]
    results = json.loads((out / "predict_results.json").read_text())
    # 40 steps on the same 8 rows: the tuned adapter answers with its training labels
    assert sum(r["predict"] == r["label"] for r in rows) >= 6, [r["predict"] for r in rows]
    assert results["predict_samples"] == 8 and results["predict_rouge-l"] > 80 and results["predict_bleu-4"] > 80


def test_do_predict_needs_an_eval_dataset(base_config, write_config, capsys):
    base_config.update(do_predict=True)
    assert lf(["train", str(write_config(**base_config))]) != 0
    assert "do_predict needs stage: pt or sft and eval_dataset" in capsys.readouterr().err


def test_report_to_tensorboard_writes_event_files(base_config, write_config, tmp_path):
    base_config.update(max_steps=4, report_to="tensorboard")
    assert lf(["train", str(write_config(**base_config))]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((Path(base_config["output_dir"]) / "runs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert len(acc.Scalars("train/loss")) == 4
