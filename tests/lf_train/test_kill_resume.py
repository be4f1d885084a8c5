"""Runs that users can trust: a run killed with SIGKILL (between steps, or in the middle of writing
a checkpoint) and started again logs exactly the losses of a run that was never interrupted, ends
with the same adapter, and resume never picks up a half-written checkpoint.

This is the resume test for LoRA sft; other stages and optimizers (rm's value head, Muon's state)
resume from a copy of their own run's checkpoint (`train_helpers.crash_after`)."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from train_helpers import step_losses

from lf_data.cli import main as lf
from lf_train.checkpoints import STAGING_DIR

# The killed run is a real `lf train` process; the snippet only decides *when* it SIGKILLs itself.
KILLER = """
import os, signal, sys
import transformers
from lf_data.cli import main
where, step = sys.argv[1], int(sys.argv[2])
if where == "after_step":
    from lf_train.callbacks import JsonlLogCallback
    log = JsonlLogCallback.on_log
    def on_log(self, args, state, control, logs=None, **kw):
        log(self, args, state, control, logs=logs, **kw)
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
    JsonlLogCallback.on_log = on_log
else:  # during the save of `step`: weights and optimizer written, RNG state and trainer state not yet
    save_rng = transformers.Trainer._save_rng_state
    def _save_rng_state(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        save_rng(self, output_dir)
    transformers.Trainer._save_rng_state = _save_rng_state
sys.exit(main(["train", *sys.argv[3:]]))
"""


RUN = {"max_steps": 10, "save_steps": 3, "lora_dropout": 0.1}  # dropout: the RNG state must resume too


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run every kill below is compared with. The kills train the same config (only paths differ),
    so it is trained once, by the first test that asks, and reused. It keeps one checkpoint
    (save_total_limit: 1), which does not change its losses, for the rotation test at the end."""
    cache = {}

    def get(config) -> dict:
        if not cache:
            from safetensors.torch import load_file

            out = tmp_path_factory.mktemp("straight")
            assert lf(["train", str(config), f"output_dir={out}", "save_total_limit=1"]) == 0
            cache.update(dir=out, losses=step_losses(out), adapter=load_file(out / "adapter_model.safetensors"))
        return cache

    return get


@pytest.mark.parametrize(("where", "step", "resumes_from"), [
    ("after_step", 7, "checkpoint-6"),
    ("during_save", 6, "checkpoint-3"),
    ("during_save", 3, None),  # killed while writing the first checkpoint: starts again from step 0
])
def test_sigkilled_run_resumes_to_the_same_losses(where, step, resumes_from, base_config, write_config, tmp_path,
                                                  caplog, uninterrupted):
    from safetensors.torch import load_file

    base_config.update(RUN)
    config = write_config(**base_config)
    straight = uninterrupted(config)

    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, where, str(step), str(config), f"output_dir={killed}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    checkpoints = sorted(p.name for p in killed.glob("checkpoint-*"))
    if where == "during_save":
        # the half-written checkpoint exists only in the staging folder, where resume never looks
        assert checkpoints == ([resumes_from] if resumes_from else [])
        assert (killed / STAGING_DIR / f"checkpoint-{step}" / "optimizer.pt").is_file()
        assert not (killed / STAGING_DIR / f"checkpoint-{step}" / "trainer_state.json").exists()
    else:
        assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    assert not (killed / "train_results.json").exists()

    with caplog.at_level("WARNING"):
        assert lf(["train", str(config), f"output_dir={killed}"]) == 0
    if resumes_from:
        assert f"resuming from {killed / resumes_from}" in caplog.text
    else:
        assert "resuming" not in caplog.text
    assert not (killed / STAGING_DIR).exists()
    got = step_losses(killed)  # (and no step logged twice)
    assert sorted(got) == list(range(1, 11))
    assert got == straight["losses"]  # every step, before and after the kill, exactly
    adapter = load_file(killed / "adapter_model.safetensors")  # and the last update too
    assert adapter.keys() == straight["adapter"].keys()
    for key, value in straight["adapter"].items():
        torch.testing.assert_close(adapter[key], value, rtol=1e-4, atol=1e-6)


def test_checkpoints_rotate_only_after_the_new_one_is_complete(base_config, write_config, uninterrupted):
    base_config.update(RUN)
    out = uninterrupted(write_config(**base_config))["dir"]  # saved at steps 3, 6, 9 and 10, keeping 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (out / "checkpoint-10" / name).is_file(), name
    assert json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())["global_step"] == 10
    assert not (out / STAGING_DIR).exists()
