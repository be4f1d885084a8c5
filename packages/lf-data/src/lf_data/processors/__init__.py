"""How one stage tokenises aligned rows; which stage uses which processor is `lf_data.stages`."""

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
    columns: tuple[str, ...] = TOKEN_COLUMNS  # lists of token ids
    flags: tuple[str, ...] = ()  # booleans


__all__ = ["IGNORE_INDEX", "TOKEN_COLUMNS", "Context", "Processor", "feedback", "pairwise", "pretrain", "supervised",
           "truncate_pair", "unsupervised"]
