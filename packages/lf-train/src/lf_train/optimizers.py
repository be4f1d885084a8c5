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


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the hidden weight matrices, AdamW for everything else, stepped as one optimizer.

    Muon orthogonalises each 2-D update with a few Newton-Schulz iterations and keeps one momentum
    buffer (half of Adam's state); embeddings, the output head, norms and biases stay on AdamW,
    as Muon's authors recommend. The learning-rate scheduler sees both optimizers' groups.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.parts = [muon, adamw]
        super().__init__([{"params": []}], {})
        self.param_groups = muon.param_groups + adamw.param_groups

    @property
    def state(self):  # type: ignore[override]
        return {**self.parts[0].state, **self.parts[1].state}

    @state.setter
    def state(self, value: Any) -> None:  # Optimizer.__init__ assigns it
        pass

    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.parts[0].state_dict(), "adamw": self.parts[1].state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.parts[0].load_state_dict(state_dict["muon"])
        self.parts[1].load_state_dict(state_dict["adamw"])


def muon_optimizer(model: Any, training_args: Any) -> torch.optim.Optimizer:
    hidden, other = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_matrix = param.ndim == 2 and "embed" not in name and "lm_head" not in name and "v_head" not in name
        (hidden if is_matrix else other).append((name, param))
    if not hidden:
        from lf_data.errors import ConfigError

        raise ConfigError("use_muon found no trainable weight matrices (it skips embeddings and the output head).")
    lr, decay = training_args.learning_rate, training_args.weight_decay
    muon = torch.optim.Muon([p for _, p in hidden], lr=lr, weight_decay=decay, adjust_lr_fn="match_rms_adamw")
    groups = [{"params": [p for n, p in other if _decays(n, p)], "weight_decay": decay},
              {"params": [p for n, p in other if not _decays(n, p)], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=(training_args.adam_beta1, training_args.adam_beta2),
                              eps=training_args.adam_epsilon)
    logger.info("Muon: %d weight matrices on Muon, %d other tensors on AdamW", len(hidden), len(other))
    return MuonWithAdamW(muon, adamw)
