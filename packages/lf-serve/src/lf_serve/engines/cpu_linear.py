"""fp32 linear layers on a CPU through oneDNN, each weight packed once at load (`cpu_packed_linear`).

torch runs an fp32 `nn.Linear` on a CPU as an MKL product. For the few rows of a decoding step MKL
keeps to one core and a plain layout: SmolLM2's LM head (49,152 x 576) took 29-37 ms for 16 rows on 2
AMD EPYC cores, against 11-12 ms through oneDNN on a weight reordered once into its blocked layout,
with both cores. `torch.ops.mkldnn._linear_pointwise` on `_reorder_linear_weight` is the pair torch's
own compiler emits for frozen CPU linear layers. Over whole answers, SmolLM2 with a merged LoRA
adapter served 16 at once at 123 against 94 tokens/s and one in 1.87 against 2.10 s, with the same
text (`bench/serve_engine.py`). Small products gain nothing and pay oneDNN's longer call (about 30 us), so only
weights of `MIN_WEIGHTS` entries or more are packed.

The packed module replaces the `nn.Linear` in the model: the plain weight is freed unless another
module shares it (a head tied to the embeddings keeps both, one more copy of that matrix). Inference
only: the op has no backward.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

MIN_WEIGHTS = 2**18
"""Pack weights of at least this many entries (576 x 576 and up; not a 192 x 576 key projection)."""


class PackedLinear(torch.nn.Module):
    """An fp32 `nn.Linear` whose weight lives in oneDNN's blocked layout."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int = 16) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def packable(module: Any) -> bool:
    """A plain fp32 `nn.Linear` on the CPU with `MIN_WEIGHTS` entries or more (not a peft or quantised layer)."""
    return (type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu" and module.weight.numel() >= MIN_WEIGHTS)


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace every packable linear layer of `model` by a `PackedLinear`; how many were replaced (0
    where torch has no oneDNN)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if packable(child):
                setattr(parent, name, PackedLinear(child))
                count += 1
    if count:
        logger.info("%d linear layers run through oneDNN with packed weights (cpu_packed_linear)", count)
    return count
