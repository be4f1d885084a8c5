"""The lf-serve model keys for what a person picks in the page (a run folder or a model reference).

The Chat tab loads an engine from them and the Evaluate tab hands them to `lf eval`, so both load
a run the same way: its adapter on the base model it was trained from (`lf_data.run_folder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lf_data.run_folder import ADAPTER_CONFIG, base_model, trained_with


def engine_config(reference: str, runs_root: Path, template: str = "") -> dict[str, Any]:
    """The lf-serve config for a run folder (adapter on its base, or full weights), or a model reference."""
    path = Path(reference).expanduser()
    if not path.is_dir() and (runs_root / reference).is_dir():
        path = runs_root / reference
    config: dict[str, Any] = {"infer_backend": "huggingface"}
    run = [str(path)] if path.is_dir() else []
    if run and (path / ADAPTER_CONFIG).is_file():
        base = base_model(run)
        if not base:
            raise ValueError(f"{reference!r} holds an adapter but its base model is unknown.")
        config["model_name_or_path"] = base
        config["adapter_name_or_path"] = run
    else:
        config["model_name_or_path"] = str(path) if path.is_dir() else reference
    chosen = template or trained_with(run, "template")
    if chosen:
        config["template"] = chosen
    return config
