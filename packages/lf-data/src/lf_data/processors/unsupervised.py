"""`ppo` (and prediction): prompts ending with the generation prompt; the reference answer, when
the data has one, becomes the labels for scoring generations."""

from __future__ import annotations

from typing import Any

from lf_data.processors.base import EMPTY_ANSWER, Context, encode_batch, split_answer
from lf_data.processors.truncation import truncate_pair


def tokenize_unsupervised(batch: dict[str, list[Any]], ctx: Context) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    rows = list(zip(batch["_prompt"], batch["_response"], batch["_system"], batch["_tools"], strict=True))
    # the prompt is rendered with an empty answer, whose pair gives the generation prompt; the
    # reference answer (if any) is rendered on its own conversation
    encoded = iter(encode_batch(ctx, [(prompt + (response[:1] or [EMPTY_ANSWER]), system, tools)
                                      for prompt, response, system, tools in rows]))
    for _, response, _, _ in rows:
        prompt_ids, answer = split_answer(next(encoded), has_answer=len(response) == 1)
        source_len, target_len = truncate_pair(len(prompt_ids), len(answer), ctx.cutoff_len)
        ids = prompt_ids[-source_len:] if source_len else []  # keep the end: it holds the question
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(answer[:target_len])
    return out


def has_prompt(row: dict[str, Any]) -> bool:
    return len(row["input_ids"]) > 0
