"""Supervised fine-tuning examples: token ids with labels on the assistant tokens only."""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def truncate_pair(source_len: int, target_len: int, budget: int) -> tuple[int, int]:
    """Share a token budget between a prompt and its response, keeping some of each.

    A short response keeps all of its tokens; otherwise both are cut in proportion, the response
    never below half of the budget, since it is what the turn teaches.
    """
    if source_len + target_len <= budget:
        return source_len, target_len
    if target_len * 2 < budget:
        return budget - target_len, target_len
    if source_len * 2 < budget:
        return source_len, budget - source_len
    target = max(budget // 2, budget * target_len // (source_len + target_len))
    return budget - target, target


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


def tokenize_supervised(batch: dict[str, list[Any]], template: Any, tokenizer: Any, cutoff_len: int,
                        train_on_prompt: bool = False, mask_history: bool = False) -> dict[str, list[Any]]:
    """`datasets.map` function (batched) from aligned rows to model inputs."""
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for messages, system in zip(batch["_messages"], batch["_system"], strict=True):
        pairs = template.encode_pairs(tokenizer, messages, system)
        input_ids, labels = encode_supervised(pairs, cutoff_len, train_on_prompt, mask_history)
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out
