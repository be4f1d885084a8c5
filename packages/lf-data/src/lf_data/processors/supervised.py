"""`sft`: token ids with labels on the assistant tokens only (every assistant turn by default)."""

from __future__ import annotations

from typing import Any

from lf_data.processors.base import Context, encode_batch
from lf_data.processors.truncation import IGNORE_INDEX, truncate_pair


def encode_supervised(pairs: list[tuple[list[int], list[int]]], cutoff_len: int, train_on_prompt: bool = False,
                      mask_history: bool = False) -> tuple[list[int], list[int]]:
    """Concatenate (prompt, response) pairs into input ids and labels, truncated to `cutoff_len`.

    Turns fill the budget oldest first; with `mask_history` (only the last answer is trained) they
    fill it newest first, so a long history can never push out the one turn that is trained.
    """
    order = list(enumerate(pairs))
    if mask_history:
        order.reverse()
    pieces: list[tuple[list[int], list[int]]] = []
    used = 0
    for turn, (source, target) in order:
        budget = cutoff_len - used
        if budget <= 0:
            break
        source_len, target_len = truncate_pair(len(source), len(target), budget)
        source, target = source[:source_len], target[:target_len]
        is_last = turn == len(pairs) - 1
        source_labels = list(source) if train_on_prompt else [IGNORE_INDEX] * len(source)
        target_labels = [IGNORE_INDEX] * len(target) if (mask_history and not is_last) else list(target)
        pieces.append((source + target, source_labels + target_labels))
        used += len(source) + len(target)
    if mask_history:
        pieces.reverse()
    return [t for ids, _ in pieces for t in ids], [t for _, labels in pieces for t in labels]


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
