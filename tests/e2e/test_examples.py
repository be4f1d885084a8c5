"""Every example recipe runs, for a few steps, on the real SmolLM2 exactly as a user starts it (the
DeepSpeed recipes are checked here and their ZeRO configs train in tests/lf_train/test_distributed.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import losses

from lf_data.cli import main as lf

REPO = Path(__file__).resolve().parents[2]
# multimodal recipes (a hub VLM or audio model on the mllm_* demo data) run on tiny models in
# test_multimodal_examples.py
MULTIMODAL = sorted(p.name for p in (REPO / "examples" / "train").glob("*.yaml") if "mllm_" in p.read_text())
# rm_lora runs (and is checked the same way) in the PPO test, whose reward adapter it is; grpo_lora
# generates up to 64 tokens per completion, so its test below asks for 8
EXAMPLES = sorted(p.name for p in (REPO / "examples" / "train").glob("*.yaml")
                  if p.name not in ("ppo_lora.yaml", "rm_lora.yaml", "grpo_lora.yaml", *MULTIMODAL))
pytestmark = pytest.mark.slow
# save_strategy=no: transformers saves a checkpoint at the last step whatever save_steps says (for the full
# fine-tunes that is the model and the optimizer's state again, about 6 s); the final model is still written
QUICK = ["max_steps=2", "logging_steps=1", "save_strategy=no", "per_device_train_batch_size=2", "cutoff_len=128",
         "plot_loss=false"]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes name data/ relative to the repository, as the README runs them


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, tmp_path):
    out = tmp_path / "out"
    if "deepspeed" in (REPO / "examples" / "train" / example).read_text():
        # checked as a user's `--check` does (the DeepSpeed JSON included); the same ZeRO-2/3 configs train
        # in two torchrun processes in tests/lf_train/test_distributed.py, so they are not trained twice
        proc = subprocess.run([sys.executable, "-m", "lf_data.cli", "train", f"examples/train/{example}",
                               f"output_dir={out}", *QUICK, "--check"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "ds_z" in proc.stdout and not out.exists()
        return
    assert lf(["train", f"examples/train/{example}", f"output_dir={out}", *QUICK]) == 0
    check_run(out)


def check_run(out: Path) -> None:
    seen = losses(out)
    assert len(seen) == 2 and all(x == x and abs(x) < 1e4 for x in seen)  # finite losses logged
    assert (out / "lf_config.yaml").is_file() and (out / "train_results.json").is_file()


def test_rm_and_ppo_examples_run(tmp_path):
    reward = tmp_path / "rm"
    assert lf(["train", "examples/train/rm_lora.yaml", f"output_dir={reward}", *QUICK]) == 0
    check_run(reward)
    out = tmp_path / "ppo"
    assert lf(["train", "examples/train/ppo_lora.yaml", f"output_dir={out}", f"reward_model={reward}",
               "max_steps=1", "max_new_tokens=4", "per_device_train_batch_size=2", "plot_loss=false"]) == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert os.path.getsize(out / "trainer_log.jsonl") > 0


def test_grpo_example_runs(tmp_path):
    out = tmp_path / "grpo"
    assert lf(["train", "examples/train/grpo_lora.yaml", f"output_dir={out}", *QUICK, "max_completion_length=8"]) == 0
    check_run(out)
    records = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert all("rewards/accuracy/mean" in r and "rewards/format/mean" in r for r in records if "loss" in r)
