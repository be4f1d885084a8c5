"""Adjustments to a model's config and modules: attention kernel, RoPE scaling, vocabulary
resizing, and fp32 islands under half precision."""

from __future__ import annotations

import logging
import math
from typing import Any

from lf_data.errors import ConfigError

logger = logging.getLogger(__name__)
ATTENTION = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}


def attention_implementation(choice: str) -> str | None:
    """The `attn_implementation` to ask transformers for; FA2 falls back to SDPA when missing."""
    wanted = ATTENTION[choice]
    if wanted == "flash_attention_2":
        import torch
        from transformers.utils import is_flash_attn_2_available

        if not (torch.cuda.is_available() and is_flash_attn_2_available()):
            logger.warning("flash_attn: fa2 needs a CUDA GPU and the flash-attn package; using sdpa instead")
            return "sdpa"
    return wanted


def apply_rope_scaling(config: Any, kind: str | None, cutoff_len: int | None) -> None:
    """Stretch RoPE so `cutoff_len` fits: factor = ceil(cutoff_len / the model's context length)."""
    if kind is None:
        return
    if getattr(config, "rope_parameters", None) is None and not hasattr(config, "max_position_embeddings"):
        raise ConfigError(f"rope_scaling: {config.model_type} models do not use RoPE.")
    context = getattr(config, "max_position_embeddings", None)
    if not cutoff_len or not context or cutoff_len <= context:
        logger.warning("rope_scaling: cutoff_len %s fits in the model's context (%s); no scaling applied",
                       cutoff_len, context)
        return
    factor = float(math.ceil(cutoff_len / context))
    params = dict(getattr(config, "rope_parameters", None) or {})
    params.update(rope_type=kind, factor=factor)
    if kind in ("yarn", "llama3"):
        params["original_max_position_embeddings"] = context
    if kind == "llama3":
        params.setdefault("low_freq_factor", 1.0)
        params.setdefault("high_freq_factor", 4.0)
    config.rope_parameters = params
    config.max_position_embeddings = int(context * factor)
    logger.info("rope_scaling: %s, factor %.1f (context %d -> %d)", kind, factor, context, context * factor)


def resize_embeddings(model: Any, tokenizer: Any) -> bool:
    """Grow the embeddings to the tokenizer; new rows start at the mean row plus small noise.

    Starting new tokens at the mean keeps their first logits ordinary, instead of random rows
    that the model has never seen. Returns whether the embeddings grew.
    """
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    new = len(tokenizer)
    if new <= old:
        return False
    model.resize_token_embeddings(new, mean_resizing=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for embedding in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                          if m is not None}.values():
            weight = embedding.weight
            mean = weight[:old].mean(dim=0, keepdim=True)
            noise = torch.randn(new - old, weight.shape[1], generator=generator) / math.sqrt(weight.shape[1])
            weight[old:] = (mean + noise.to(weight.dtype)).to(weight.dtype)
    logger.info("resized the embeddings from %d to %d tokens (new rows: mean + noise)", old, new)
    return True


def upcast_layernorm(model: Any) -> int:
    """Put every normalisation layer in fp32; returns how many."""
    import torch

    count = 0
    for module in model.modules():
        if "norm" in type(module).__name__.lower():
            module.to(torch.float32)
            count += 1
    return count


def upcast_lmhead_output(model: Any) -> None:
    import torch

    def to_fp32(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.to(torch.float32)

    model.get_output_embeddings().register_forward_hook(to_fp32)


MOE_BLOCK = __import__("re").compile(r"(Sparse)?Mo[Ee](Block|Layer)$")


def mark_moe_leaf_modules(model: Any) -> list[str]:
    """Under DeepSpeed ZeRO-3, make mixture-of-experts blocks leaf modules.

    ZeRO-3 gathers parameters per module as they are used; a router that sends a batch to only some
    experts would leave the others' parameters un-gathered on some ranks and hang. Marking the
    whole block as a leaf gathers all experts together. Returns the block class names marked.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return []
    classes = {type(m) for m in model.modules() if MOE_BLOCK.search(type(m).__name__)}
    if classes:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, sorted(classes, key=lambda c: c.__name__))
        logger.info("ZeRO-3 leaf modules: %s", ", ".join(sorted(c.__name__ for c in classes)))
    return sorted(c.__name__ for c in classes)
