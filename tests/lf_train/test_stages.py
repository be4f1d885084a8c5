"""Stages other than sft, through `lf train`."""

import json
from pathlib import Path

import pytest
import torch
from train_helpers import LOSS_TOLERANCE, crash_after, log_records, losses, step_losses

from lf_data.cli import main as lf

# Per-step losses of two runs below on the tiny fixtures (fixed seeds), recorded on CPU; the same with
# OMP_NUM_THREADS=1 and 2. A change in packing, masking, the DPO loss or the optimizer fails here.
PT_PACKED_LOSSES = [
    6.464076, 5.897768, 5.157402, 4.936445, 4.318344, 4.677649, 3.830495, 3.301759, 4.185707, 3.787783,
    3.614408, 2.946060, 3.269991, 2.777162, 2.861426,
]
DPO_SIGMOID_LOSSES = [  # step 1 is log 2: the policy starts equal to the reference
    0.693147, 0.227277, 0.041539, 0.013031, 0.007010, 0.002670, 0.002427, 0.001987, 0.001812, 0.001506,
]


def test_pretraining_on_packed_text(base_config, write_config, more_data):
    base_config.update(stage="pt", dataset="texts", cutoff_len=16, max_steps=15)
    assert lf(["train", str(write_config(**base_config))]) == 0
    seen = losses(base_config["output_dir"])
    assert seen == pytest.approx(PT_PACKED_LOSSES, abs=LOSS_TOLERANCE), seen
    assert sum(seen[-3:]) / 3 < 0.6 * sum(seen[:3]) / 3, seen  # fixed seed: 5.8 -> 3.0


def test_reward_model_learns_to_prefer_the_chosen_answer_and_resumes(base_config, write_config, more_data, tiny_llama,
                                                                     tmp_path):
    from safetensors.torch import load_file

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model, load_tokenizer
    from lf_models.precision import choose_precision
    from lf_train.collators import PairwiseCollator
    from lf_train.stages.rm import last_token_values

    base_config.update(stage="rm", dataset="pref", max_steps=20, save_steps=15, learning_rate=1e-2, val_size=2)
    assert lf(["train", str(write_config(**base_config))]) == 0
    out = Path(base_config["output_dir"])
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] == 1.0
    seen = losses(out)
    assert seen[-1] < 0.1 < seen[0], seen  # -log sigmoid(margin): from ~0.69 towards 0

    # the saved adapter + value head, loaded again, score chosen above rejected on every pair
    model_args = ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(out)])
    model = load_model(model_args, FinetuningArguments(), choose_precision(), False, add_value_head=True)
    tokenizer = load_tokenizer(model_args)
    data = build_dataset(DataArguments(dataset=["pref"], dataset_dir=str(more_data), template="chatml"),
                         tokenizer, "rm").train_dataset
    batch = PairwiseCollator(tokenizer.pad_token_id)(list(data))
    with torch.no_grad():
        rewards = last_token_values(model(batch["input_ids"], batch["attention_mask"])[1], batch["attention_mask"])
    chosen, rejected = rewards.chunk(2)
    assert torch.all(chosen > rejected)

    # killed after checkpoint-15, the run resumes to the same losses, adapter and value head (the head is
    # restored from the checkpoint with the adapter and the optimizer)
    crashed = crash_after(out, 15, tmp_path / "crashed")
    assert lf(["train", str(write_config(**base_config)), f"output_dir={crashed}"]) == 0
    assert step_losses(crashed) == step_losses(out)
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = load_file(out / name), load_file(crashed / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.fixture
def pref_batch(more_data, tiny_llama):
    """The preference pairs, tokenised and collated chosen-first, to measure what training changed."""
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer
    from lf_train.collators import PairwiseCollator

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_llama)))
    data = build_dataset(DataArguments(dataset=["pref"], dataset_dir=str(more_data), template="chatml"),
                         tokenizer, "dpo").train_dataset
    return PairwiseCollator(tokenizer.pad_token_id)(list(data))


PREFERENCE_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                      "logps/rejected")


def preference_metrics(output_dir, keys=PREFERENCE_METRICS, prefix="") -> list[dict]:
    """The preference metrics of the logged training steps (evaluations with prefix="eval_"), checked for sense."""
    records = [r for r in log_records(output_dir) if ("eval_loss" if prefix else "loss") in r]
    assert records
    for r in records:
        assert all(prefix + key in r for key in keys), r
        if prefix + "rewards/accuracies" in keys:
            assert 0 <= r[prefix + "rewards/accuracies"] <= 1, r
        assert r[prefix + "rewards/margins"] == pytest.approx(r[prefix + "rewards/chosen"] - r[prefix + "rewards/rejected"])
        assert r[prefix + "logps/chosen"] < 0 and r[prefix + "logps/rejected"] < 0, r
    return records


def _margins(model, batch) -> torch.Tensor:
    """log p(chosen) - log p(rejected) of each pair (summed over the answer tokens)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    token_logps = logits.log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    chosen, rejected = (token_logps * (labels != -100)).sum(-1).chunk(2)
    return chosen - rejected


@pytest.mark.parametrize("loss", ["sigmoid", "hinge", "ipo", "orpo", "simpo"])
def test_preference_optimisation_raises_the_chosen_answer(loss, base_config, write_config, pref_batch, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_config.update(stage="dpo", dataset="pref", pref_loss=loss, max_steps=10, learning_rate=1e-2)
    assert lf(["train", str(write_config(**base_config))]) == 0
    metrics = preference_metrics(base_config["output_dir"])
    assert metrics[-1]["rewards/accuracies"] == 1.0 and metrics[-1]["rewards/margins"] > 0, metrics[-1]
    if loss == "sigmoid":  # the default; every loss equals TRL's own in test_preference_losses.py
        seen = losses(base_config["output_dir"])
        assert seen == pytest.approx(DPO_SIGMOID_LOSSES, abs=LOSS_TOLERANCE), seen
        # step 1: the policy is the reference (LoRA starts at zero), so every reward is 0 and no pair is won yet
        first = metrics[0]
        assert first["rewards/chosen"] == first["rewards/rejected"] == first["rewards/accuracies"] == 0, first
    before = _margins(AutoModelForCausalLM.from_pretrained(tiny_llama), pref_batch)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), base_config["output_dir"])
    after = _margins(tuned, pref_batch)
    assert torch.all(after > before + 1.0), (before, after)  # log p(chosen) - log p(rejected) rose on every pair


def test_full_tuning_dpo_uses_a_frozen_reference_copy(base_config, write_config, pref_batch, tiny_llama):
    from transformers import AutoModelForCausalLM

    base_config.update(stage="dpo", dataset="pref", finetuning_type="full", max_steps=6, learning_rate=1e-3,
                       val_size=2)
    assert lf(["train", str(write_config(**base_config))]) == 0
    preference_metrics(base_config["output_dir"])
    preference_metrics(base_config["output_dir"], prefix="eval_")  # the closing evaluation
    results = json.loads((Path(base_config["output_dir"]) / "eval_results.json").read_text())
    assert {f"eval_{key}" for key in PREFERENCE_METRICS} <= results.keys(), results
    before = _margins(AutoModelForCausalLM.from_pretrained(tiny_llama), pref_batch)
    after = _margins(AutoModelForCausalLM.from_pretrained(base_config["output_dir"]), pref_batch)
    assert torch.all(after > before), (before, after)


def test_kto_raises_desirable_answers_and_lowers_undesirable_ones(base_config, write_config, pref_batch, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_config.update(stage="kto", dataset="kto", max_steps=10, learning_rate=1e-2, per_device_train_batch_size=8)
    assert lf(["train", str(write_config(**base_config))]) == 0
    metrics = preference_metrics(base_config["output_dir"], [*set(PREFERENCE_METRICS) - {"rewards/accuracies"}, "kl"])
    assert metrics[-1]["rewards/margins"] > metrics[0]["rewards/margins"], (metrics[0], metrics[-1])
    assert all(r["kl"] >= 0 for r in metrics)
    # the same prompts answered the desirable (chosen) and the undesirable (rejected) way
    before = _margins(AutoModelForCausalLM.from_pretrained(tiny_llama), pref_batch)
    after = _margins(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                               base_config["output_dir"]), pref_batch)
    assert torch.all(after > before + 1.0), (before, after)


def test_the_loss_plot_shows_the_eval_loss(tmp_path, monkeypatch):
    import matplotlib.axes

    from lf_data.run_folder import LOG_FILE
    from lf_train.callbacks import plot_loss

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, *a, **k: drawn.append(k["label"]) or original(ax, *a, **k))
    (tmp_path / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "eval_loss": 1.7}]))
    assert plot_loss(tmp_path).is_file()
    assert drawn == ["loss", "smoothed", "eval loss"]


def test_overwrite_never_deletes_what_the_run_reads(base_config, write_config, more_data, capsys):
    base_config.update(output_dir=str(more_data.parent), overwrite_output_dir=True)  # holds dataset_dir
    assert lf(["train", str(write_config(**base_config))]) == 1
    assert "overwrite_output_dir would delete it" in capsys.readouterr().err
    assert (more_data / "dataset_info.json").is_file()


def test_a_plain_run_loads_neither_bitsandbytes_nor_deepspeed(base_config, write_config, tmp_path):
    """peft imports bitsandbytes with the package wherever it is installed (about 50 MiB of peak memory and
    1 s a run here): a fresh `lf train` process that quantises nothing marks it absent first. accelerate's
    unwrap_model imported deepspeed wherever it is installed (25 MB and 0.3 s a run): LF's Trainers ask
    whether it was imported instead, which is the same answer for every model, DeepSpeed's included.
    One process checks both (each fresh interpreter costs seconds of imports)."""
    import subprocess
    import sys

    pytest.importorskip("bitsandbytes")
    base_config.update(max_steps=2, save_steps=100)
    config = write_config(**base_config)
    script = ("import sys\n"
              "from lf_data.cli import main\n"
              f"assert main(['train', {str(config)!r}]) == 0\n"
              "import peft.helpers\n"
              "print(repr(sys.modules['bitsandbytes']), peft.helpers.bnb, 'torch' in sys.modules)\n"
              "print('deepspeed' in sys.modules)\n"
              "import torch, deepspeed\n"
              "from accelerate.utils.other import extract_model_from_parallel\n"
              "model = torch.nn.Linear(2, 2)\n"
              "print(extract_model_from_parallel(model) is model)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()  # deepspeed logs its accelerator choice on stdout as it is imported
    after_run = lines.index("None None True")
    assert lines[after_run + 1] == "False"  # the run never imported deepspeed
    assert lines[-1] == "True"  # and the patched test still unwraps once it is imported
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
