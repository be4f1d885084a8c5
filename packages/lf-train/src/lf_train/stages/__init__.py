"""Training stages, one readable file each, registered by their `stage:` name."""

from lf_train.stages.sft import run_sft

STAGES = {"sft": run_sft}

__all__ = ["STAGES"]
