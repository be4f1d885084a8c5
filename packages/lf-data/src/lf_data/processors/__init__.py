"""Every stage's preprocessing, in one registry: stage name -> (tokenise, keep-row predicate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lf_data.processors import feedback, pairwise, pretrain, supervised, unsupervised
from lf_data.processors.base import Context
from lf_data.processors.truncation import IGNORE_INDEX, truncate_pair

TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True)
class Processor:
    tokenize: Callable[[dict[str, list[Any]], Context], dict[str, list[Any]]]
    keep: Callable[[dict[str, Any]], bool]
    drop_reason: str
    needs_response: bool = True
    needs: str = ""  # what the aligned data must provide ("ranking", "kto_tag")
    columns: tuple[str, ...] = TOKEN_COLUMNS  # lists of token ids
    flags: tuple[str, ...] = ()  # booleans


PROCESSORS: dict[str, Processor] = {
    "pt": Processor(pretrain.tokenize_pretrain, pretrain.has_tokens, "empty text", needs_response=False),
    "sft": Processor(supervised.tokenize_supervised, supervised.has_trainable_tokens,
                     "no trainable token (no answer, or cut off by cutoff_len)"),
    "rm": Processor(pairwise.tokenize_pairwise, pairwise.has_trainable_tokens,
                    "no trainable token in chosen or rejected", needs="ranking", columns=pairwise.COLUMNS),
    "kto": Processor(feedback.tokenize_feedback, feedback.has_trainable_tokens,
                     "no trainable token, or no kto_tag", needs="kto_tag", columns=feedback.COLUMNS[:-1],
                     flags=("kto_tags",)),
    "ppo": Processor(unsupervised.tokenize_unsupervised, unsupervised.has_prompt, "empty prompt",
                     needs_response=False),
}
for alias in ("dpo", "orpo", "simpo"):
    PROCESSORS[alias] = PROCESSORS["rm"]

__all__ = ["IGNORE_INDEX", "PROCESSORS", "Context", "Processor", "truncate_pair"]
