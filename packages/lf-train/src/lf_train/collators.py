"""Batch collation for supervised data, plain or packed.

Neat-packed rows carry each token's example number in ``attention_mask`` (1, 1, 2, 2, 2, ...). They
become a 4-D boolean mask where a token sees only earlier tokens of its own example, so packed
examples give exactly the logits they would give alone (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lf_data.processors import IGNORE_INDEX


@dataclass
class SupervisedCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None
    neat_packing: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([list(r[key]) + [value] * (length - len(r[key])) for r in rows], dtype=torch.long)

        batch = {"input_ids": padded("input_ids", self.pad_token_id), "labels": padded("labels", IGNORE_INDEX)}
        segments = padded("attention_mask", 0)
        if "position_ids" in rows[0]:
            batch["position_ids"] = padded("position_ids", 0)
        if self.neat_packing:
            causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
            same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] > 0)
            mask = (same & causal) | torch.eye(length, dtype=torch.bool)  # padding sees itself: no empty rows
            batch["attention_mask"] = mask[:, None]
        else:
            batch["attention_mask"] = (segments > 0).long()
        return batch


@dataclass
class PairwiseCollator:
    """Chosen and rejected examples in one batch: the n chosen first, the n rejected last."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        flat = [{"input_ids": r[f"{side}_input_ids"], "attention_mask": r[f"{side}_attention_mask"],
                 "labels": r[f"{side}_labels"]} for side in ("chosen", "rejected") for r in rows]
        return SupervisedCollator(self.pad_token_id, self.pad_to_multiple_of)(flat)


@dataclass
class KTOCollator:
    """KTO rows: the answers, their mismatched KL pairs, and the desirable flags."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = SupervisedCollator(self.pad_token_id, self.pad_to_multiple_of)
        batch = pad([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows])
        kl = pad([{"input_ids": r["kl_input_ids"], "attention_mask": r["kl_attention_mask"],
                   "labels": r["kl_labels"]} for r in rows])
        batch.update({f"kl_{key}": value for key, value in kl.items()})
        batch["kto_tags"] = torch.tensor([bool(r["kto_tags"]) for r in rows])
        return batch
