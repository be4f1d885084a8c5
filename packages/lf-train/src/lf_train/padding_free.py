"""Padding-free training (`padding_free`): which runs take it, and the preference stages' side of it.

sft and pt collate padding-free rows directly (`SupervisedCollator(padding_free=True)`). The dpo
and kto stages keep their padded batches, because TRL's loss code reads log-probabilities as
[rows, positions]; `EndToEnd` runs such a batch through the model as one padding-free row and hands
the fused LM head's per-token fields back in the padded layout. The attention that keeps the examples
apart is `lf_models.padding_free`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lf_data.processors import IGNORE_INDEX

logger = logging.getLogger(__name__)

PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def choose_padding_free(models: list[Any], plan: Any, data: Any) -> bool:
    """padding_free as asked, or by default wherever it applies; switches the models' SDPA to `lf_sdpa`."""
    from peft import PeftModel

    from lf_data.errors import ConfigError
    from lf_models.padding_free import padding_free_blocker, use_padding_free_attention
    from lf_train.args import PADDING_FREE_STAGES
    from lf_train.plan import rows_packed

    asked = plan.train.padding_free
    if (asked is False or plan.train.stage not in PADDING_FREE_STAGES or rows_packed(plan.data, plan.train.stage)
            or getattr(data, "media", None) is not None):
        return False  # padding_free: true with packed or multimodal rows was refused by the config check
    models = [m.get_base_model() if isinstance(m, PeftModel) else m for m in models if m is not None]
    blocker = next((b for m in models if (b := padding_free_blocker(m, plan.data.cutoff_len))), None)
    attention = getattr(models[0].config, "_attn_implementation", None) or "eager"
    if blocker is None and attention != "sdpa" and not attention.startswith("flash_attention"):
        blocker = f"attention {attention} would see the examples of a row as one sequence (sdpa and fa2 keep them apart)"
    if blocker is None and plan.train.mixture_of_depths:
        blocker = "mixture_of_depths routes the tokens of a row together"
    if blocker is not None:
        if asked:
            raise ConfigError(f"padding_free: true, but {blocker}; remove padding_free.")
        logger.info("padding-free batches off: %s", blocker)
        return False
    for m in models:
        attention = use_padding_free_attention(m)
    logger.info("batches: padding-free, the examples end to end (attention %s)", attention)
    return True


def branches_allowed(model: Any) -> bool:
    """Whether the model's attention reads branching rows (`lf_sdpa`; FlashAttention-2's varlen kernel
    sees only where examples start), so that pairs can share their prompt; logged when they do."""
    from lf_models.padding_free import NAME

    if getattr(model.config, "_attn_implementation", None) != NAME:
        return False
    logger.info("pairs: each prompt computed once, the rejected answer branching off the chosen one")
    return True


class EndToEnd:
    """A model taking a right-padded batch that runs it as one padding-free row, and gives the fused LM
    head's per-token fields (`trl.trainer.utils.add_fused_lm_head`) back as [rows, positions - 1], zero
    past each row's end, as the padded forward gives them.

    With `pairs` (the preference layout: n chosen rows, then their n rejected rows), each rejected row
    branches off its chosen row where the two part (`lf_models.padding_free`): the prompt they share is
    computed once. Its fields there are the chosen row's, which are the same numbers (same tokens before,
    same token to predict); the branch starts one token early, at the last shared token, so that this
    token's prediction of the rejected answer's next token has a place of its own."""

    def __init__(self, model: Any, pairs: bool = False) -> None:
        self.inner, self.pairs = model, pairs

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 **kwargs: Any) -> Any:
        ids, positions, flat_labels, index = end_to_end(input_ids, attention_mask, labels, self.pairs)
        out = self.inner(input_ids=ids[None], position_ids=positions[None], labels=flat_labels[None], **kwargs)
        for name in PER_TOKEN_FIELDS:
            value = getattr(out, name, None)
            if value is not None:  # [1, total - 1] -> padded; index total - 1 is an appended zero
                setattr(out, name, torch.cat([value[0], value.new_zeros(1)])[index])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def shared_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens two id sequences have in common."""
    n = min(a.numel(), b.numel())
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if differ.numel() else n


def end_to_end(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
               pairs: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A right-padded batch as one row: (ids, positions, labels, index), where index[r, t] is the place
    in the row's shifted per-token outputs of row r's prediction at t, or the row's length minus one
    (an appended zero) past its end. Each run's first label is dropped: it would be the target of the
    token before it, another example's."""
    lengths = attention_mask.sum(-1).tolist()
    rows, width = input_ids.shape
    half = rows // 2 if pairs else rows
    runs: list[tuple[int, int]] = []  # (row, first token) in the order they are laid out
    branch_of: dict[int, tuple[int, int]] = {}  # rejected row -> (its chosen row, branch position)
    for row in range(half):
        runs.append((row, 0))
        if pairs:
            other = half + row
            shared = shared_prefix(input_ids[row, :lengths[row]], input_ids[other, :lengths[other]])
            first = shared - 1 if shared >= 2 else 0
            runs.append((other, first))
            if first:
                branch_of[other] = (row, first)
    starts, ids, positions, flat_labels, flat = {}, [], [], [], 0
    for row, first in runs:
        end = lengths[row]
        starts[row] = flat - first  # the row's token t sits at flat + t - first
        ids.append(input_ids[row, first:end])
        positions.append(torch.arange(first, end, device=input_ids.device))
        piece = labels[row, first:end].clone()
        piece[0] = IGNORE_INDEX
        flat_labels.append(piece)
        flat += end - first
    t = torch.arange(width - 1, device=input_ids.device)
    index = torch.full((rows, width - 1), flat - 1, dtype=torch.long, device=input_ids.device)
    for row in range(rows):
        inside = t < lengths[row] - 1
        index[row] = torch.where(inside, starts[row] + t, flat - 1)
        if row in branch_of:  # before the branch: the chosen row's predictions
            chosen, first = branch_of[row]
            index[row, :first] = starts[chosen] + t[:first]
    return torch.cat(ids), torch.cat(positions), torch.cat(flat_labels), index
