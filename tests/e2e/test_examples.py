"""Every example recipe runs, for a few steps, on the real SmolLM2 exactly as a user starts it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lf_data.cli import main as lf

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (REPO / "examples" / "train").glob("*.yaml") if p.name != "ppo_lora.yaml")
pytestmark = pytest.mark.slow
QUICK = ["max_steps=2", "logging_steps=1", "save_steps=1000", "per_device_train_batch_size=2", "cutoff_len=128",
         "plot_loss=false"]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes name data/ relative to the repository, as the README runs them


def losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, tmp_path):
    out = tmp_path / "out"
    if "deepspeed" in (REPO / "examples" / "train" / example).read_text():
        # DeepSpeed runs in processes started by torchrun, as `lf train` launches them (one here)
        proc = subprocess.run([sys.executable, "-m", "lf_data.cli", "train", f"examples/train/{example}",
                               f"output_dir={out}", *QUICK], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "FORCE_TORCHRUN": "1", "OMP_NUM_THREADS": "2"})
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        assert lf(["train", f"examples/train/{example}", f"output_dir={out}", *QUICK]) == 0
    seen = losses(out)
    assert len(seen) == 2 and all(x == x and abs(x) < 1e4 for x in seen)  # finite losses logged
    assert (out / "lf_config.yaml").is_file() and (out / "train_results.json").is_file()


def test_ppo_example_runs_on_a_reward_adapter(tmp_path):
    reward = tmp_path / "rm"
    assert lf(["train", "examples/train/rm_lora.yaml", f"output_dir={reward}", *QUICK]) == 0
    out = tmp_path / "ppo"
    assert lf(["train", "examples/train/ppo_lora.yaml", f"output_dir={out}", f"reward_model={reward}",
               "max_steps=1", "max_new_tokens=4", "per_device_train_batch_size=2", "plot_loss=false"]) == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert os.path.getsize(out / "trainer_log.jsonl") > 0
