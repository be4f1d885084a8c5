"""The model and fine-tuning parts of the configuration (LlamaFactory-compatible key names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lf_data.errors import ConfigError


@dataclass
class ModelArguments:
    model_name_or_path: str | None = None
    """A hub id, a local directory, a `.gguf` file, or a bundled model name (`lf_models.bundled`)."""
    adapter_name_or_path: list[str] | None = None
    """Adapters to load: all but the last are merged; training continues the last one."""
    cache_dir: str | None = None
    """Where hub downloads are cached."""
    model_revision: str = "main"
    """Branch, tag or commit of a hub model."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off unless you trust its author."""

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("`model_name_or_path` is required: a hub id, a local model folder, a .gguf file, "
                              "or a bundled model such as smollm2-135m-instruct.")


@dataclass
class FinetuningArguments:
    finetuning_type: Literal["lora", "full"] = "lora"
    """`lora`: train low-rank adapters on a frozen model; `full`: train every weight."""
    lora_rank: int = 8
    """Rank of the LoRA matrices."""
    lora_alpha: int | None = None
    """LoRA scaling numerator; defaults to twice the rank."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target: list[str] | None = None
    """Module names to adapt, or `all` for every linear layer except the output head (the default)."""
    additional_target: list[str] | None = None
    """Modules trained fully and saved next to the adapter (for example embed_tokens,lm_head)."""

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ConfigError(f"lora_rank={self.lora_rank} must be at least 1.")
        if self.lora_alpha is None:
            self.lora_alpha = self.lora_rank * 2
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout={self.lora_dropout} must be in [0, 1).")
        if not self.lora_target:
            self.lora_target = ["all"]
        if "all" in self.lora_target and len(self.lora_target) > 1:
            raise ConfigError("lora_target mixes `all` with module names; use either `all` or a list of names.")
