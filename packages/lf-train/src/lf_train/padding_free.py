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


class EndToEnd:
    """A model taking a right-padded batch that runs it as one padding-free row, and gives the fused LM
    head's per-token fields (`trl.trainer.utils.add_fused_lm_head`) back as [rows, positions - 1], zero
    past each row's end, as the padded forward gives them."""

    def __init__(self, model: Any) -> None:
        self.inner = model

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 **kwargs: Any) -> Any:
        keep = attention_mask.bool()
        rows, width = input_ids.shape
        positions = torch.arange(width, device=input_ids.device).expand(rows, width)
        labels = labels.clone()
        labels[:, 0] = IGNORE_INDEX  # would be the target of the previous example's last token
        out = self.inner(input_ids=input_ids[keep][None], position_ids=positions[keep][None],
                         labels=labels[keep][None], **kwargs)
        lengths = keep.sum(-1)
        starts = torch.cumsum(lengths, 0) - lengths
        flat_index = starts[:, None] + positions[:, :-1]  # the row's token t predicts its token t + 1
        total = int(lengths.sum())
        index = torch.where(positions[:, :-1] < (lengths - 1)[:, None], flat_index, total - 1)
        for name in PER_TOKEN_FIELDS:
            value = getattr(out, name, None)
            if value is not None:  # [1, total - 1] -> padded; index total - 1 is an appended zero
                setattr(out, name, torch.cat([value[0], value.new_zeros(1)])[index])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
