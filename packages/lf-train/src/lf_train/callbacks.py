"""Trainer callbacks that leave a machine-readable log and a loss curve in output_dir."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lf_data.run_folder import LOG_FILE, LOSS_PLOT, read_log

__all__ = ["LOG_FILE", "LOSS_PLOT", "JsonlLogCallback", "plot_loss", "read_log"]


class JsonlLogCallback(TrainerCallback):
    """One JSON line per logging step: loss, lr, grad norm, tokens seen, throughput, ETA."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOG_FILE
        self.start_time = 0.0
        self.start_step = 0
        self.start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        self.start_time = time.time()
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen or 0
        if state.is_world_process_zero and self.path.exists():  # resumed: drop lines past the checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= state.global_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.time() - self.start_time
        done = state.global_step - self.start_step
        record: dict[str, Any] = {"step": state.global_step, "total_steps": state.max_steps,
                                  "epoch": round(state.epoch or 0.0, 4)}
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if key in logs:
                record[key] = logs[key]
        if "train_loss" in logs:
            record["train_loss"] = logs["train_loss"]
        tokens = state.num_input_tokens_seen or 0
        if tokens:
            record["tokens_seen"] = tokens
            record["tokens_per_second"] = round((tokens - self.start_tokens) / max(elapsed, 1e-9), 2)
        record["elapsed_seconds"] = round(elapsed, 2)
        if done > 0:
            record["eta_seconds"] = round(elapsed / done * (state.max_steps - state.global_step), 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def plot_loss(output_dir: str | Path) -> Path | None:
    """Draw the training loss (raw and smoothed) against steps; None when nothing was logged."""
    points = [(r["step"], r["loss"]) for r in read_log(output_dir) if "loss" in r]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*points, strict=True)
    smoothed, last = [], losses[0]
    weight = 1.8 * (1 / (1 + __import__("math").exp(-0.05 * len(losses))) - 0.5)  # more smoothing on long runs
    for value in losses:
        last = last * weight + (1 - weight) * value
        smoothed.append(last)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, losses, color="#1f77b4", alpha=0.4, label="loss")
    ax.plot(steps, smoothed, color="#1f77b4", label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss of {Path(output_dir).name}")
    ax.legend()
    path = Path(output_dir) / LOSS_PLOT
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
