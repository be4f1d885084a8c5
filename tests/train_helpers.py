"""What `lf train` tests import by name: the losses a run logged, and the folder a crash leaves.

(Kept out of conftest.py: every test folder has a conftest module, so `from conftest import ...`
picks whichever one pytest loaded last. tests/ is on sys.path through tests/conftest.py, so
`from train_helpers import losses` works from every test folder.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lf_data.run_folder import LOG_FILE

# Pinned losses (tiny fixtures, fixed seeds, CPU) are compared with this absolute tolerance: it holds
# for torch on 1 and on 2 threads, while a real change (another label mask, learning rate, loss
# formula, packing) moves the losses by far more.
LOSS_TOLERANCE = 1e-4
# tests/lf_train/test_distributed.py's tiny LoRA run in two processes (NPROC_PER_NODE=2, max_steps 6, save_steps 3,
# per_device_train_batch_size 2, lora_dropout 0; torchrun, gloo, OMP_NUM_THREADS=1). One process with batch 4
# logged the same losses to 1e-3 when these were pinned; Ray Train's workers and an elastic launch that lost a
# worker and resumed must log exactly these.
TWO_PROCESS_LOSSES = [6.252074241638184, 5.179644584655762, 4.038486957550049, 3.410158634185791,
                      2.7953405380249023, 2.631671905517578]


def log_records(output_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / LOG_FILE).read_text().splitlines() if line.strip()]


def step_losses(output_dir: str | Path) -> dict[int, float]:
    """{step: training loss}; a step logged twice (a resume that did not trim the log) fails the test."""
    records = [r for r in log_records(output_dir) if "loss" in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records}


def losses(output_dir: str | Path) -> list[float]:
    """The logged training losses, in step order."""
    return [loss for _, loss in sorted(step_losses(output_dir).items())]


def crash_after(finished: Path, step: int, into: Path) -> Path:
    """The folder a run killed after saving checkpoint-`step` leaves (that checkpoint and the log), built
    from a finished run's folder instead of training a second time; `lf train` on `into` resumes it."""
    into.mkdir(parents=True)
    shutil.copytree(finished / f"checkpoint-{step}", into / f"checkpoint-{step}")
    shutil.copy(finished / LOG_FILE, into / LOG_FILE)  # with lines past `step`, as a killed run's log has
    return into
