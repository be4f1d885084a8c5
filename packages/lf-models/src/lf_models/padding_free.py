"""Padding-free batches: a batch's examples laid end to end in one row, each numbering its positions
from 0, so no step computes on padding.

FlashAttention-2 reads such a row through its varlen kernel (the restarting `position_ids`). SDPA
does not keep the examples apart reliably: transformers builds a (tokens x tokens) block mask for it
only when no cache exists (a training forward has one unless `use_cache` is off), and even then the
kernel computes every cross-example score to mask it out. So LF registers one more attention,
`lf_sdpa`: SDPA's causal kernel run on each example of the row in turn (exact: the scores an example
gets alone, and no mask). Anything that is not such a row (padded evaluation batches, generation with
a cache) is plain SDPA. Eager attention is not switched, so padding-free training refuses it.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "lf_sdpa"


def segment_lengths(position_ids: torch.Tensor) -> list[int] | None:
    """The lengths of the examples in one padding-free row, or None when it holds one example."""
    positions = position_ids.reshape(-1)
    starts = (positions == 0).nonzero().flatten().tolist()
    if len(starts) <= 1 or starts[0] != 0:
        return None
    return [end - start for start, end in zip(starts, [*starts[1:], positions.numel()], strict=True)]


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if (attention_mask is None and position_ids is not None and query.shape[0] == 1
            and query.shape[2] == key.shape[2] == position_ids.shape[-1]):
        lengths = segment_lengths(position_ids)
        if lengths is not None:
            parts = [sdpa_attention_forward(module, q, k, v, None, **kwargs)[0]
                     for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True)]
            return torch.cat(parts, dim=1), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
          mask_function: Any = None, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """No mask for one unpadded row seen whole (the attention keeps its examples apart); SDPA's otherwise."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    if batch_size == 1 and attention_mask is None and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset, kv_offset,
                     mask_function or causal_mask_function, attention_mask, **kwargs)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, _mask)


def padding_free_blocker(model: Any, cutoff_len: int) -> str | None:
    """Why this model cannot take padding-free rows, or None when it can."""
    config = getattr(model, "config", None)
    if config is None or not getattr(model, "_supports_attention_backend", False):
        return f"{type(model).__name__} does not use transformers' attention interface"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if text is not config or getattr(config, "vision_config", None) is not None:
        return "multimodal models number their positions themselves"
    window = getattr(text, "sliding_window", None)
    if window and getattr(text, "use_sliding_window", True) and window < cutoff_len:
        return f"its sliding window ({window}) is shorter than cutoff_len ({cutoff_len})"
    return None


def use_padding_free_attention(model: Any) -> str:
    """Switch an SDPA model to `lf_sdpa`; others keep theirs (FlashAttention-2 reads the rows itself)."""
    current = getattr(model.config, "_attn_implementation", None)
    if current == "sdpa":
        register()
        model.set_attn_implementation(NAME)
        current = NAME
    return current or "default"
