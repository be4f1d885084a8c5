"""Padding-free batches: a batch's examples laid end to end in one row, each numbering its positions
from 0, so no step computes on padding.

FlashAttention-2 reads such a row through its varlen kernel (the restarting `position_ids`). SDPA
does not keep the examples apart reliably: transformers builds a (tokens x tokens) block mask for it
only when no cache exists (a training forward has one unless `use_cache` is off), and even then the
kernel computes every cross-example score to mask it out. So LF registers one more attention,
`lf_sdpa`: SDPA's causal kernel run on each example of the row in turn (exact: the scores an example
gets alone, and no mask). Anything that is not such a row (padded evaluation batches, generation with
a cache) is plain SDPA. Eager attention is not switched, so padding-free training refuses it.

A row may also branch: where the positions jump back to p > 0 (not to 0), the tokens that follow
continue the first p tokens of the current example (a shared prompt, computed once: the preference
stages lay out the rejected answer after the chosen one this way). The branch attends to those p
tokens and to itself, causally, as it would with the prompt repeated in front of it.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "lf_sdpa"


def segments(position_ids: torch.Tensor) -> list[tuple[int, int, int, int]] | None:
    """The runs of one padding-free row as (start, length, trunk start, prefix): a new example has
    prefix 0; a branch (positions jumping back to p, 0 < p <= the example's first run's length)
    continues the first p tokens of the example whose first run starts at `trunk start`. Other jumps
    continue the run, as before branches existed. None when the row is one plain example."""
    positions = position_ids.reshape(-1).tolist()
    if not positions or positions[0] != 0:
        return None
    runs: list[list[int]] = [[0, 1, 0, 0]]
    trunk = runs[0]
    for i in range(1, len(positions)):
        current = positions[i]
        if current == 0:
            trunk = [i, 1, i, 0]
            runs.append(trunk)
        elif current != positions[i - 1] + 1 and current <= trunk[1]:  # the trunk grows no more once branched
            runs.append([i, 1, trunk[0], current])
        else:
            runs[-1][1] += 1
    return None if len(runs) == 1 else [tuple(run) for run in runs]


_last: tuple[Any, Any] = (None, None)


def _segments_of(position_ids: torch.Tensor) -> list[tuple[int, int, int, int]] | None:
    """`segments`, read once per forward: every layer gets the same position_ids tensor."""
    global _last
    if _last[0] is not position_ids:
        _last = (position_ids, segments(position_ids))
    return _last[1]


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if (attention_mask is None and position_ids is not None and query.shape[0] == 1
            and query.shape[2] == key.shape[2] == position_ids.shape[-1]):
        runs = _segments_of(position_ids)
        if runs is not None:
            parts = []
            for start, length, trunk, prefix in runs:
                q, k, v = (t[:, :, start:start + length] for t in (query, key, value))
                mask = None
                if prefix:  # the trunk's first `prefix` tokens, then the branch causally
                    k = torch.cat([key[:, :, trunk:trunk + prefix], k], dim=2)
                    v = torch.cat([value[:, :, trunk:trunk + prefix], v], dim=2)
                    columns = torch.arange(prefix + length, device=query.device)
                    mask = (columns[None, :] <= torch.arange(length, device=query.device)[:, None] + prefix)[None, None]
                parts.append(sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0])
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
