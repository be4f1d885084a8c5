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


def _decay_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if _decays(name, param) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def badam_optimizer(model: Any, training_args: Any, train_args: Any) -> torch.optim.Optimizer:
    """BAdam (Luo et al., 2024): block coordinate descent with Adam inside the active block.

    `layer` mode trains one decoder layer at a time and drops the Adam state of the others when it
    switches; `ratio` mode updates a sparse share of every weight. Either way the optimizer state
    is a fraction of full AdamW's.
    """
    from badam import BlockOptimizer, BlockOptimizerRatio

    named = list(model.named_parameters())
    betas = (training_args.adam_beta1, training_args.adam_beta2)
    if train_args.badam_mode == "layer":
        base = torch.optim.AdamW(_decay_groups(model, training_args.weight_decay), lr=training_args.learning_rate,
                                 betas=betas, eps=training_args.adam_epsilon)
        optimizer = BlockOptimizer(base_optimizer=base, named_parameters_list=named, block_prefix_list=None,
                                   switch_block_every=train_args.badam_switch_interval,
                                   start_block=train_args.badam_start_block, switch_mode=train_args.badam_switch_mode,
                                   verbose=train_args.badam_verbose)
    else:
        optimizer = BlockOptimizerRatio(param_groups=_decay_groups(model, training_args.weight_decay),
                                        named_parameters_list=named, switch_every=train_args.badam_switch_interval,
                                        update_ratio=train_args.badam_update_ratio,
                                        mask_mode=train_args.badam_mask_mode, verbose=train_args.badam_verbose,
                                        lr=training_args.learning_rate, betas=betas, eps=training_args.adam_epsilon)
    logger.info("BAdam: %s mode, switching every %d steps", train_args.badam_mode, train_args.badam_switch_interval)
    return optimizer
