"""The files a training run leaves in its output_dir, and the one reader of each.

`lf train` writes these; `lf chat`/`lf api`, `lf export`, `lf data check` and the board read them
back (the template and base model a run was trained with, its log). Kept in lf-data, the lowest
package, so every package reads a run the same way, with no torch import.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

RESOLVED_CONFIG = "lf_config.yaml"
"""The fully resolved configuration of the run (every key, defaults filled in)."""
LOG_FILE = "trainer_log.jsonl"
"""One JSON object per logging step: loss, learning rate, grad norm, tokens seen, throughput, ETA."""
LOSS_PLOT = "training_loss.png"
FINISHED_MARKER = "train_results.json"
"""Written by the Trainer when training ends: a run holding it is finished, never resumed."""
VALUE_HEAD_FILE = "value_head.safetensors"
"""The scalar head of an `rm` run (and of PPO's value model), next to the adapter."""
ADAPTER_CONFIG = "adapter_config.json"
STAGING_DIR = ".staging"
"""Checkpoints are written here first and renamed into place, so none is ever half-written."""
TENSORBOARD_DIR = "runs"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
RUN_FILES = (RESOLVED_CONFIG, LOG_FILE, LOSS_PLOT, STAGING_DIR, TENSORBOARD_DIR)
"""What a run that stopped before its first checkpoint may have left (safe to start over)."""


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of trainer_log.jsonl; a line still being written is skipped, not an error."""
    try:
        lines = (Path(run_dir) / LOG_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint-N folders, oldest first."""
    try:
        found = [p for p in Path(run_dir).iterdir() if p.is_dir() and CHECKPOINT.match(p.name)]
    except OSError:
        return []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration a run left, or {} when the folder holds none (or a broken one)."""
    path = Path(run_dir).expanduser() / RESOLVED_CONFIG
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _folders(adapters: list[str] | str | None) -> list[str]:
    if isinstance(adapters, str):  # a comma-separated list, as in a config file
        return [part.strip() for part in adapters.split(",") if part.strip()]
    return list(adapters or [])


def trained_with(adapters: list[str] | str | None, key: str) -> Any:
    """A key (`template`, `model_name_or_path`) of the run that trained the last adapter that has one."""
    for adapter in reversed(_folders(adapters)):
        config = read_run_config(adapter)
        if config:
            return config.get(key)
    return None


def base_model(adapters: list[str] | str | None) -> str | None:
    """The model the last adapter was trained on: its run's model_name_or_path, else peft's record
    (`base_model_name_or_path` in adapter_config.json)."""
    trained = trained_with(adapters, "model_name_or_path")
    if isinstance(trained, str) and trained:
        return trained
    for adapter in reversed(_folders(adapters)):
        try:
            config = json.loads((Path(adapter).expanduser() / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(config, dict) and config.get("base_model_name_or_path"):
            return str(config["base_model_name_or_path"])
    return None


def resolve_template(explicit: str | None, adapters: list[str] | str | None = None,
                     model_default: str | None = None) -> str | None:
    """The chat template a command uses, everywhere the same: the one asked for, else the one the
    adapter was trained with, else the model's default (`ModelSource.default_template`: a bundled
    model's, or its family's when its tokenizer has no chat template), else None (the tokenizer's own)."""
    if explicit:
        return explicit
    trained = trained_with(adapters, "template")
    return trained if isinstance(trained, str) and trained else model_default
