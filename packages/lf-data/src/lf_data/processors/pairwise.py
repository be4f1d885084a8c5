"""`rm`, `dpo`, `orpo`, `simpo`: a chosen and a rejected answer sharing one prompt."""

from __future__ import annotations

from typing import Any

from lf_data.processors.base import Context, encode_batch, split_answer
from lf_data.processors.truncation import IGNORE_INDEX, truncate_pair

COLUMNS = ("chosen_input_ids", "chosen_attention_mask", "chosen_labels",
           "rejected_input_ids", "rejected_attention_mask", "rejected_labels")


def tokenize_pairwise(batch: dict[str, list[Any]], ctx: Context) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {key: [] for key in COLUMNS}
    rows = list(zip(batch["_prompt"], batch["_response"], batch["_system"], batch["_tools"], strict=True))
    usable = [r for r in rows if len(r[1]) == 2]
    encoded = iter(encode_batch(ctx, [(prompt + [answer], system, tools) for prompt, response, system, tools in usable
                                      for answer in response]))
    for _, response, _, _ in rows:
        result = {"chosen": ([], []), "rejected": ([], [])}
        if len(response) == 2:
            prompt_ids, chosen = split_answer(next(encoded))
            _, rejected = split_answer(next(encoded))
            source_len, target_len = truncate_pair(len(prompt_ids), max(len(chosen), len(rejected)), ctx.cutoff_len)
            prompt_ids = prompt_ids[:source_len]
            prompt_labels = list(prompt_ids) if ctx.train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
            result = {name: (prompt_ids + ids[:target_len], prompt_labels + ids[:target_len])
                      for name, ids in (("chosen", chosen), ("rejected", rejected))}
        for name, (ids, labels) in result.items():
            out[f"{name}_input_ids"].append(ids)
            out[f"{name}_attention_mask"].append([1] * len(ids))
            out[f"{name}_labels"].append(labels)
    return out


def has_trainable_tokens(row: dict[str, Any]) -> bool:
    return any(t != IGNORE_INDEX for t in row["chosen_labels"]) and any(t != IGNORE_INDEX for t in row["rejected_labels"])
