"""sft/pt's training loss without the logits: the LM head and the cross-entropy fused, chunked over
tokens, so the (tokens x vocabulary) logits never exist at once (`fused_lm_head`).

Two implementations, chosen by device (`choose_fused_head`):
- "torch": PyTorch's own `torch.nn.functional.linear_cross_entropy` (torch >= 2.15). Its chunked path
  computes each chunk's gradient in the forward, so nothing is recomputed in the backward, and LF hands
  it only the positions that have a label (a prompt's positions never reach the head). On a CPU it is
  faster than the logits plus cross-entropy and holds a chunk instead of the logits (`bench/fused_head.py`),
  so it is the default there.
- "trl": TRL's `add_fused_lm_head` (its Triton kernels on a GPU, as TRL's SFT trainer does), and where
  torch's op cannot express the head: logit soft-capping or scaling (Gemma 2, Cohere, Granite) and MoE
  router losses. On a CPU TRL's torch fallback recomputes the logits in its backward; it runs only when
  asked (`fused_lm_head: true`).
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any

import torch

ROWS_BUDGET = 2**25
"""Logit entries per chunk of torch's op (128 MiB in fp32): 512 token rows for SmolLM2's 49,152-entry
vocabulary. torch's default chunking sizes chunks like the input (32 rows there), too thin for CPU GEMMs:
1,024 tokens' head took 1.4x the plain time with it and 0.75x at 512 rows (bench/fused_head.py)."""


def chunk_rows(vocab: int) -> int:
    """Token rows per chunk: a power of two between 64 and 4,096 whose logits fit ROWS_BUDGET."""
    return max(64, min(4096, 2 ** int(math.log2(max(1, ROWS_BUDGET // vocab)))))


def triton_device(device: torch.device) -> bool:
    from transformers.utils import is_triton_available

    return device.type in ("cuda", "xpu") and is_triton_available()


def torch_head_blocker(model: Any) -> str | None:
    """Why torch's linear_cross_entropy cannot compute this model's loss, or None when it can."""
    if not hasattr(torch.nn.functional, "linear_cross_entropy"):
        return f"torch {torch.__version__} has no linear_cross_entropy (2.15 added it)"
    text = model.config.get_text_config()
    if getattr(text, "final_logit_softcapping", None) is not None:
        return "the model soft-caps its logits"
    scales = [getattr(text, key, None) for key in ("logit_scale", "output_multiplier", "lm_head_multiplier",
                                                    "logits_scaling")]
    if any(scale not in (None, 1, 1.0) for scale in scales):
        return "the model scales its logits"
    if getattr(text, "output_router_logits", False):
        return "the model adds a router loss"
    return None


def choose_fused_head(asked: bool | None, device: torch.device, model: Any, sharded: bool = False) -> str | None:
    """The head for this run: "torch", "trl" or None (the logits and cross-entropy), the fastest that saves
    the logits here, with `fused_lm_head: true` forcing one and `false` forbidding it. A head sharded by
    ZeRO-3 or FSDP goes to TRL's, which gathers it first."""
    if asked is False:
        return None
    if triton_device(device):
        return "trl"
    if not sharded and torch_head_blocker(model) is None:
        return "torch"
    return "trl" if asked else None


def add_torch_fused_head(model: Any) -> None:
    """Patch `model.forward` (a causal LM, before PEFT wraps it): `model(..., labels=labels,
    fused_lm_head=True)` returns only the mean token loss (over `num_items_in_batch` when given, as
    transformers' loss does), from the backbone's hidden states and torch's linear_cross_entropy."""
    original_forward = model.forward
    rows = chunk_rows(model.config.get_text_config().vocab_size)

    @functools.wraps(type(model).forward)  # generate and the Trainer read the signature
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head:
            extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return original_forward(*args, **kwargs, **{k: v for k, v in extra.items() if v is not None})
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        head = self.get_output_embeddings()
        labels = labels.to(head.weight.device)
        mask = labels != -100
        picked = hidden.to(head.weight.device)[mask]  # only the positions with a label reach the head
        device = picked.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
        bias = head.bias.to(dtype) if head.bias is not None else None
        with torch.autocast(device, enabled=False):
            total = torch.nn.functional.linear_cross_entropy(
                picked.to(dtype), head.weight.to(dtype), labels[mask], linear_bias=bias, reduction="sum",
                options=torch.nn.LinearCrossEntropyOptions(chunking_method=None, batch_chunk_size=rows))
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return CausalLMOutputWithPast(loss=total.float() / count)

    model.forward = types.MethodType(forward, model)


def add_fused_head(kind: str, model: Any) -> None:
    """Patch the causal LM under `model` (a PeftModel's base model) with the chosen head."""
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if kind == "torch":
        add_torch_fused_head(base)
    else:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(base)
