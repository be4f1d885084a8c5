"""`rm`, `dpo`, `orpo`, `simpo`: a chosen and a rejected answer sharing one prompt."""

from __future__ import annotations

from typing import Any

from lf_data.processors.base import Context, prompt_and_answer
from lf_data.processors.truncation import IGNORE_INDEX, truncate_pair

COLUMNS = ("chosen_input_ids", "chosen_attention_mask", "chosen_labels",
           "rejected_input_ids", "rejected_attention_mask", "rejected_labels")


def tokenize_pairwise(batch: dict[str, list[Any]], ctx: Context) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {key: [] for key in COLUMNS}
    for prompt, response, system, tools in zip(batch["_prompt"], batch["_response"], batch["_system"],
                                               batch["_tools"], strict=True):
        if len(response) != 2:
            rows = {"chosen": ([], []), "rejected": ([], [])}
        else:
            prompt_ids, chosen = prompt_and_answer(ctx, prompt, response[0], system, tools)
            _, rejected = prompt_and_answer(ctx, prompt, response[1], system, tools)
            source_len, target_len = truncate_pair(len(prompt_ids), max(len(chosen), len(rejected)), ctx.cutoff_len)
            prompt_ids = prompt_ids[:source_len]
            prompt_labels = list(prompt_ids) if ctx.train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
            rows = {name: (prompt_ids + ids[:target_len], prompt_labels + ids[:target_len])
                    for name, ids in (("chosen", chosen), ("rejected", rejected))}
        for name, (ids, labels) in rows.items():
            out[f"{name}_input_ids"].append(ids)
            out[f"{name}_attention_mask"].append([1] * len(ids))
            out[f"{name}_labels"].append(labels)
    return out


def has_trainable_tokens(row: dict[str, Any]) -> bool:
    return any(t != IGNORE_INDEX for t in row["chosen_labels"]) and any(t != IGNORE_INDEX for t in row["rejected_labels"])
