"""S² (shifted sparse) attention for long-context training of Llama-family models (LongLoRA).

During training each sequence is cut into four groups that attend only within themselves; half of
the heads see the groups shifted by half a group, so information still flows between neighbouring
groups. Attention cost drops from L² to L²/4 while the model, evaluated with full attention,
keeps its quality. Outside training, or when the length does not split into groups, it is plain
SDPA attention.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "lf_s2_sdpa"
GROUP_RATIO = 0.25
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def _repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    return states if groups == 1 else states.repeat_interleave(groups, dim=1)


def shifted_sparse_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    group = int(length * GROUP_RATIO)
    if not module.training or group < 2 or length % group:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    key = _repeat_kv(key, heads // key.shape[1])
    value = _repeat_kv(value, heads // value.shape[1])
    half, offset = heads // 2, group // 2
    drop = dropout if module.training else 0.0

    def grouped(states: torch.Tensor, size: int) -> torch.Tensor:  # (B, h, L', D) -> (B * L'/G, h, G, D)
        h = states.shape[1]
        return states.reshape(batch, h, size // group, group, dim).transpose(1, 2).reshape(-1, h, group, dim)

    def ungrouped(states: torch.Tensor, size: int) -> torch.Tensor:
        h = states.shape[1]
        return states.reshape(batch, size // group, h, group, dim).transpose(1, 2).reshape(batch, h, size, dim)

    # first half of the heads: groups [0, G), [G, 2G), ...
    q, k, v = (grouped(s[:, :half], length) for s in (query, key, value))
    plain = ungrouped(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, dropout_p=drop), length)
    # second half: groups shifted by G/2. The sequence is padded by G/2 at both ends instead of rolled,
    # so no token ever sees a later one (rolling would wrap the end of the text before its start)
    size = length + group
    padded = [F.pad(s[:, half:], (0, 0, offset, group - offset)) for s in (query, key, value)]
    q, k, v = (grouped(s, size) for s in padded)
    real = torch.zeros(size, dtype=torch.bool, device=query.device)
    real[offset:offset + length] = True
    groups = size // group
    keys_real = real.view(1, groups, 1, group).expand(batch, groups, 1, group).reshape(-1, 1, group)
    causal = torch.tril(torch.ones(group, group, dtype=torch.bool, device=query.device))
    mask = causal & keys_real[:, :, None, :]
    mask = mask | torch.eye(group, dtype=torch.bool, device=query.device)  # padding rows see themselves
    shifted = ungrouped(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, dropout_p=drop),
                        size)[:, :, offset:offset + length]
    out = torch.cat([plain, shifted], dim=1)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make the attention function available to transformers under NAME (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, shifted_sparse_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
