"""The data part of the configuration (LlamaFactory-compatible key names)."""

from __future__ import annotations

from dataclasses import dataclass

from lf_data.errors import ConfigError


@dataclass
class DataArguments:
    template: str | None = None
    """Chat template name (see `lf_data.templates.TEMPLATES`), or `auto`/unset for the tokenizer's own."""
    dataset: list[str] | None = None
    """Comma-separated names from `dataset_info.json`, merged in order."""
    dataset_dir: str = "data"
    """Folder holding `dataset_info.json` and the local dataset files."""
    cutoff_len: int = 2048
    """Maximum tokens per example after tokenisation; longer conversations are truncated."""
    max_samples: int | None = None
    """Keep at most this many rows of each dataset (for quick runs)."""
    train_on_prompt: bool = False
    """Also compute the loss on prompt tokens (normally only assistant tokens are trained)."""
    mask_history: bool = False
    """Train only on the last assistant turn of each conversation."""
    preprocessing_num_workers: int | None = None
    """Processes used to tokenise the dataset."""

    def __post_init__(self) -> None:
        if self.cutoff_len < 2:
            raise ConfigError(f"cutoff_len={self.cutoff_len} is too small; use at least a few hundred tokens.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples={self.max_samples} must be a positive number of rows.")
        if self.template == "":
            self.template = None
