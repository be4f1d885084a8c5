"""The LF-specific training keys; the usual Hugging Face `TrainingArguments` keys are accepted too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lf_data.errors import ConfigError


@dataclass
class TrainArguments:
    stage: Literal["pt", "sft", "rm"] = "sft"
    """Training stage: `pt` (language modelling on plain text), `sft` (supervised fine-tuning on
    conversations), `rm` (pairwise reward model with a value head)."""
    plot_loss: bool = True
    """Save the loss curve as training_loss.png in output_dir."""
    overwrite_output_dir: bool = False
    """Start over in an output_dir that already holds a finished run (its files are replaced)."""
    warmup_ratio: float | None = None
    """Fraction of the steps used for linear learning-rate warm-up (sets warmup_steps)."""

    def __post_init__(self) -> None:
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1).")
