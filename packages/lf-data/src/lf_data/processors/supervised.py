"""`sft`: token ids with labels on the assistant tokens only (every assistant turn by default)."""

from __future__ import annotations

from typing import Any

from lf_data.processors.base import Context, encode_batch
from lf_data.processors.truncation import IGNORE_INDEX, truncate_pair


def encode_supervised(pairs: list[tuple[list[int], list[int]]], cutoff_len: int, train_on_prompt: bool = False,
                      mask_history: bool = False) -> tuple[list[int], list[int]]:
    """Concatenate (prompt, response) pairs into input ids and labels, truncated to `cutoff_len`."""
    input_ids: list[int] = []
    labels: list[int] = []
    for turn, (source, target) in enumerate(pairs):
        budget = cutoff_len - len(input_ids)
        if budget <= 0:
            break
        source_len, target_len = truncate_pair(len(source), len(target), budget)
        source, target = source[:source_len], target[:target_len]
        is_last = turn == len(pairs) - 1
        source_labels = list(source) if train_on_prompt else [IGNORE_INDEX] * len(source)
        target_labels = [IGNORE_INDEX] * len(target) if (mask_history and not is_last) else list(target)
        input_ids += source + target
        labels += source_labels + target_labels
    return input_ids, labels


def tokenize_supervised(batch: dict[str, list[Any]], ctx: Context) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    rows = list(zip(batch["_prompt"], batch["_response"], batch["_system"], batch["_tools"], strict=True))
    # prompt-only rows teach nothing: they come out empty and are dropped as "no trainable tokens"
    usable = [(prompt + response, system, tools) for prompt, response, system, tools in rows if len(response) == 1]
    encoded = iter(encode_batch(ctx, usable))
    for _, response, _, _ in rows:
        input_ids, labels = [], []
        if len(response) == 1:
            input_ids, labels = encode_supervised(next(encoded), ctx.cutoff_len, ctx.train_on_prompt,
                                                  ctx.mask_history)
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out


def has_trainable_tokens(row: dict[str, Any]) -> bool:
    return any(t != IGNORE_INDEX for t in row["labels"])
