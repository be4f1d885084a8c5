"""Optimizers LF builds itself (the Trainer builds the plain ones from `optim`)."""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _decays(name: str, param: torch.Tensor) -> bool:
    return param.ndim >= 2 and "norm" not in name.lower() and not name.endswith(".bias")


def loraplus_optimizer(model: Any, training_args: Any, ratio: float) -> torch.optim.Optimizer:
    """AdamW where LoRA's B matrices learn `ratio` times faster than everything else (LoRA+).

    B starts at zero and carries the update's output direction; a larger step for B than for A
    trains faster at the same stability (Hayou et al., 2024).
    """
    lr, decay = training_args.learning_rate, training_args.weight_decay
    groups: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = "lora_B" if "lora_B" in name else "other"
            groups.setdefault((kind, _decays(name, param)), []).append(param)
    params = [{"params": group, "lr": lr * ratio if kind == "lora_B" else lr,
               "weight_decay": decay if decays else 0.0}
              for (kind, decays), group in groups.items()]
    logger.info("LoRA+: lora_B learns at %g (x%g)", lr * ratio, ratio)
    return torch.optim.AdamW(params, lr=lr, betas=(training_args.adam_beta1, training_args.adam_beta2),
                             eps=training_args.adam_epsilon)
