"""Token-weighted supervised losses for the sft stage: DFT, ASFT and EAFT.

Each is the next-token cross-entropy with a per-token weight (and, for ASFT, a KL term). They are
summed over the label tokens and divided by `num_items_in_batch`, the label tokens of the whole
optimizer step (all gradient-accumulation micro-batches, all processes), exactly as transformers
normalises its own loss; without it (evaluation) they are a mean over the batch's label tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from lf_data.processors import IGNORE_INDEX

EAFT_TOP_K = 20
"""EAFT approximates the entropy over the 20 most likely tokens (the paper's top-K approximation)."""


def shift_tokens(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, V] in fp32, targets [N]) of the label tokens: position t predicts label t+1."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:].to(logits.device)
    mask = labels != IGNORE_INDEX
    return logits[mask], labels[mask]


def _reduce(per_token: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
    if num_items_in_batch is None:
        return per_token.mean() if per_token.numel() else per_token.sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(per_token.device)
    return per_token.sum() / num_items_in_batch


def dft_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Dynamic Fine-Tuning (Wu et al., arXiv 2508.05629): -sg(p_t) log p_t per label token.

    Weighting each token's cross-entropy by its own detached probability cancels the 1/p_t factor
    that SFT's gradient carries (an ill-posed implicit reward, in the paper's RL reading)."""
    logits, targets = shift_tokens(logits, labels)
    nll = F.cross_entropy(logits, targets, reduction="none")
    return _reduce(nll * torch.exp(-nll).detach(), num_items_in_batch)


def eaft_weights(logits: torch.Tensor, alpha: float = 1.0, top_k: int = EAFT_TOP_K) -> torch.Tensor:
    """EAFT's gate per position: (H_topK / ln K) ** alpha, the entropy of the renormalised top-K
    distribution divided by its maximum, so 1 for a uniform guess and 0 for a certain one."""
    with torch.no_grad():
        k = min(top_k, logits.size(-1))
        top = torch.topk(logits.detach().float(), k, dim=-1).values.log_softmax(-1)
        entropy = -(top.exp() * top).sum(-1)
        return (entropy / math.log(k)) ** alpha


def eaft_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None,
              alpha: float = 1.0) -> torch.Tensor:
    """Entropy-Adaptive Fine-Tuning (Diao et al., arXiv 2601.02151): cross-entropy times the
    normalised entropy of the model's prediction, so confident tokens that contradict the label
    ("confident conflicts", the paper's cause of forgetting) move the weights little."""
    logits, targets = shift_tokens(logits, labels)
    nll = F.cross_entropy(logits, targets, reduction="none")
    return _reduce(nll * eaft_weights(logits, alpha), num_items_in_batch)


def asft_loss(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor,
              num_items_in_batch: Any = None, alpha: float = 0.1) -> torch.Tensor:
    """Anchored SFT (Zhu et al., arXiv 2509.23753): the DFT term plus alpha x KL(pi_ref || pi_theta)
    over the vocabulary at each label position, which anchors DFT to the starting model and stops
    its drift. The KL direction is the authors' reference implementation's."""
    policy, targets = shift_tokens(logits, labels)
    reference, _ = shift_tokens(reference_logits, labels)
    nll = F.cross_entropy(policy, targets, reduction="none")
    ref_logp = reference.log_softmax(-1)
    kl = (ref_logp.exp() * (ref_logp - policy.log_softmax(-1))).sum(-1)
    return _reduce(nll * torch.exp(-nll).detach() + alpha * kl, num_items_in_batch)


def sft_loss_func(train_args: Any) -> Callable[..., torch.Tensor] | None:
    """The Trainer's `compute_loss_func` for use_dft_loss / use_eaft_loss (None: the model's own
    cross-entropy). ASFT needs the reference model's logits too; the sft stage's trainer adds them."""
    if train_args.use_dft_loss:
        return lambda outputs, labels, num_items_in_batch=None: dft_loss(outputs["logits"], labels, num_items_in_batch)
    if train_args.use_eaft_loss:
        alpha = train_args.eaft_alpha
        return lambda outputs, labels, num_items_in_batch=None: eaft_loss(outputs["logits"], labels,
                                                                          num_items_in_batch, alpha)
    return None


CPU_FUSED_HEAD_CHUNK = 2048
"""Vocabulary entries per tile of TRL's fused LM head on a CPU (dpo, kto, grpo). TRL's 32768 suits its
Triton kernels; its torch fallback keeps about nine tiles alive, so 1,024 tokens x 49,152 entries held
1.07 GiB at 32768 (more than the 0.59 GiB of full logits), 0.15 GiB at 4096 and 0.08 GiB at 2048, for 3%
more time than 4096 (bench/fused_head.py)."""


def size_fused_head_tiles(device: torch.device) -> None:
    """Narrow TRL's fused-LM-head tiles when training on a CPU (dpo, kto and grpo always use the head;
    sft/pt with `fused_lm_head`). TRL reads the width from a module constant at every call."""
    from trl.trainer import utils

    if device.type == "cpu" and hasattr(utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_FUSED_HEAD_CHUNK
