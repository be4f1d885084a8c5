"""Trainer callbacks that leave a machine-readable log and a loss curve in output_dir."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lf_data.run_folder import LOG_FILE, LOSS_PLOT, read_log

__all__ = ["LOGGED_KEYS", "METRIC_PREFIXES", "JsonlLogCallback", "plot_loss"]

LOGGED_KEYS = ("loss", "eval_loss", "eval_perplexity", "learning_rate", "grad_norm", "train_loss", "kl", "eval_kl")
# the metrics preference training is judged by, under TRL's names (`rewards/margins`, `logps/chosen`, ...),
# and GRPO's completion lengths (`completions/mean_length`, `completions/clipped_ratio`, ...), with `eval_` in
# front when they come from an evaluation
METRIC_PREFIXES = ("rewards/", "logps/", "completions/", "eval_rewards/", "eval_logps/", "eval_completions/",
                   "ppo/")  # the ppo stage's policy/value losses, clip fractions, approximate KL, answer length


class JsonlLogCallback(TrainerCallback):
    """One JSON line per logging step: loss, lr, grad norm, preference metrics, tokens seen, throughput, ETA."""

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
        for key, value in logs.items():
            if key in LOGGED_KEYS or key.startswith(METRIC_PREFIXES):
                record[key] = value
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
    """Draw the training loss (raw and smoothed) and the eval loss, if any, against steps; None when
    nothing was logged."""
    records = read_log(output_dir)
    points = [(r["step"], r["loss"]) for r in records if "loss" in r]
    eval_points = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not points and not eval_points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if points:
        steps, losses = zip(*points, strict=True)
        smoothed, last = [], losses[0]
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(losses))) - 0.5)  # more smoothing on long runs
        for value in losses:
            last = last * weight + (1 - weight) * value
            smoothed.append(last)
        ax.plot(steps, losses, color="#1f77b4", alpha=0.4, label="loss")
        ax.plot(steps, smoothed, color="#1f77b4", label="smoothed")
    if eval_points:
        steps, losses = zip(*eval_points, strict=True)
        ax.plot(steps, losses, color="#ff7f0e", marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"loss of {Path(output_dir).name}")
    ax.legend()
    path = Path(output_dir) / LOSS_PLOT
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
