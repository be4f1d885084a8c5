"""Model families LF knows: one registry, keyed by `config.model_type`.

A family says which chat template its instruct models use, which modules `lora_target: all`
adapts, where its decoder layers live (for freeze tuning), whether it is a vision-language model
(loaded through the image-text-to-text auto class with its processor), and its known quirks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelFamily:
    model_type: str
    architectures: tuple[str, ...] = ()
    template: str | None = None
    """lf-data template name of the family's instruct/chat models."""
    lora_targets: tuple[str, ...] = ()
    """Module names `lora_target: all` adapts; empty = every linear layer except the head."""
    layers: str = "model.layers"
    """Dotted path of the decoder layer list (freeze tuning counts these)."""
    vlm: bool = False
    quirks: tuple[str, ...] = field(default_factory=tuple)


FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    if family.model_type in FAMILIES:
        raise ValueError(f"family {family.model_type!r} is registered twice")
    FAMILIES[family.model_type] = family
    return family


def family_for(config: Any) -> ModelFamily | None:
    return FAMILIES.get(getattr(config, "model_type", None))


def model_class_for(config: Any) -> Any:
    """The transformers auto class that loads this config: image-text-to-text for VLMs."""
    import transformers

    family = family_for(config)
    if family is not None and family.vlm:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


register(ModelFamily("llama", ("LlamaForCausalLM",), template="llama3"))
register(ModelFamily("qwen2", ("Qwen2ForCausalLM",), template="qwen"))
register(ModelFamily("qwen3", ("Qwen3ForCausalLM",), template="qwen3"))
register(ModelFamily("mistral", ("MistralForCausalLM",), template="mistral"))
