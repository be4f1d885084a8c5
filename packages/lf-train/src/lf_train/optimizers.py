"""Optimizers LF builds itself (the Trainer builds the plain ones from `optim`)."""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _decays(name: str, param: torch.Tensor) -> bool:
    return param.ndim >= 2 and "norm" not in name.lower() and not name.endswith(".bias")


def loraplus_optimizer(model: Any, training_args: Any, ratio: float, embedding_lr: float = 1e-6) -> torch.optim.Optimizer:
    """AdamW where LoRA's B matrices learn `ratio` times faster than everything else (LoRA+), and
    the LoRA matrices of embedding layers at `embedding_lr` (loraplus_lr_embedding).

    B starts at zero and carries the update's output direction; a larger step for B than for A
    trains faster at the same stability (Hayou et al., 2024).
    """
    lr, decay = training_args.learning_rate, training_args.weight_decay
    rates = {"lora_B": lr * ratio, "embedding": embedding_lr, "other": lr}
    groups: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = "embedding" if "lora_embedding" in name else "lora_B" if "lora_B" in name else "other"
            groups.setdefault((kind, _decays(name, param)), []).append(param)
    params = [{"params": group, "lr": rates[kind], "weight_decay": decay if decays else 0.0}
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


def apollo_optimizer(model: Any, training_args: Any, train_args: Any) -> torch.optim.Optimizer:
    """APOLLO (Zhu et al., arXiv 2412.05270): AdamW whose moments live in a low-rank (by default
    random) projection of each targeted weight's gradient; only the per-channel scaling they give
    is applied to the full gradient, so the state of the big matrices is rank x width.

    The targeted linear weights get the projection and weight decay; the other trainable tensors
    get plain AdamW (weight decay except on norms and biases). `apollo_layerwise` steps each tensor
    in its gradient hook, as transformers does for GaLore's layer-wise mode."""
    from apollo_torch import APOLLOAdamW
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    from lf_data.errors import ConfigError
    from lf_models.adapters import lora_targets

    targets = lora_targets(model, train_args.apollo_target)
    projected = [module.weight for name, module in model.named_modules()
                 if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in targets
                 and module.weight.requires_grad]
    if not projected:
        raise ConfigError(f"use_apollo found no trainable linear weights named {', '.join(targets)}; check "
                          "apollo_target and the trainable layers.")
    ids = {id(p) for p in projected}
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in ids:
            (decay if _decays(name, param) else no_decay).append(param)
    projection = {"rank": train_args.apollo_rank, "proj": train_args.apollo_proj,
                  "proj_type": train_args.apollo_proj_type, "update_proj_gap": train_args.apollo_update_interval,
                  "scale": train_args.apollo_scale, "scale_type": train_args.apollo_scale_type}
    decay_rate = training_args.weight_decay
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": decay_rate},
              {"params": projected, "weight_decay": decay_rate, **projection}]
    options = {"lr": training_args.learning_rate, "betas": (training_args.adam_beta1, training_args.adam_beta2),
               "eps": training_args.adam_epsilon, "scale_front": train_args.apollo_scale_front}
    logger.info("APOLLO: %d weight matrices projected to rank %d (%s), %d other tensors on AdamW", len(projected),
                train_args.apollo_rank, train_args.apollo_proj, len(decay) + len(no_decay))
    if not train_args.apollo_layerwise:
        return APOLLOAdamW([g for g in groups if g["params"]], **options)
    per_param = {param: APOLLOAdamW([{**group, "params": [param]}], **options)
                 for group in groups for param in group["params"]}

    def step_now(param: torch.Tensor) -> None:
        if param.grad is not None:
            per_param[param].step()
            per_param[param].zero_grad()

    for param in per_param:
        param.register_post_accumulate_grad_hook(step_now)
    return LayerWiseDummyOptimizer(optimizer_dict=per_param, lr=training_args.learning_rate)


def adam_mini_optimizer(model: Any, training_args: Any) -> torch.optim.Optimizer:
    """Adam-mini (Zhang et al., arXiv 2406.16793): Adam with one second-moment value per block
    (a query/key head, an output neuron of the other matrices, an embedding row) instead of one
    per weight, which about halves Adam's state at the same quality.

    Adam-mini cuts query/key weights into heads of hidden_size**2 / heads elements; models whose
    head_dim differs from hidden_size / heads get the true head size (head_dim x hidden_size)."""
    from adam_mini import Adam_mini

    config = model.config
    hidden, heads = config.hidden_size, config.num_attention_heads
    optimizer = Adam_mini(named_parameters=model.named_parameters(), lr=training_args.learning_rate,
                          betas=(training_args.adam_beta1, training_args.adam_beta2), eps=training_args.adam_epsilon,
                          weight_decay=training_args.weight_decay, dim=hidden, n_heads=heads,
                          n_kv_heads=getattr(config, "num_key_value_heads", None), verbose=False)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    optimizer.head_numel = head_dim * hidden
    # it counts GPUs, not processes: one process on a machine with several GPUs would wait for the others
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    optimizer.world_size = torch.distributed.get_world_size() if distributed else 1
    logger.info("Adam-mini: %d tensors, one second moment per head / neuron", len(optimizer.param_groups))
    return optimizer


def compact_galore_projections() -> None:
    """Make GaLore keep only its rank-r projection, not the whole SVD factor it was cut from.

    galore-torch 1.0 slices the projection out of `torch.linalg.svd`'s U or Vh and, for fp32 weights
    (every run but pure bf16), keeps the slice: a view that holds the whole min(m, n)^2 factor alive.
    That is 0.2 GiB on SmolLM2-135M and about 14 GiB on a 7B Llama (64 MiB per 4096-wide matrix)
    instead of rank x width. Copying the slice gives the same numbers in its own small storage.
    Installed once per process when a run uses GaLore; idempotent."""
    from galore_torch import galore_projector

    projector = galore_projector.GaLoreProjector
    if getattr(projector.get_orthogonal_matrix, "_lf_compact", False):
        return
    original = projector.get_orthogonal_matrix

    def get_orthogonal_matrix(self: Any, weights: torch.Tensor, rank: int, type: str) -> Any:  # noqa: A002
        result = original(self, weights, rank, type)
        if isinstance(result, list):
            return [_own_storage(t) for t in result]
        return _own_storage(result)

    get_orthogonal_matrix._lf_compact = True  # type: ignore[attr-defined]
    get_orthogonal_matrix._lf_original = original  # type: ignore[attr-defined]
    projector.get_orthogonal_matrix = get_orthogonal_matrix


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.untyped_storage().nbytes() > tensor.numel() * tensor.element_size():
        return tensor.contiguous().clone()
    return tensor
