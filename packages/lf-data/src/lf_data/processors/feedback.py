"""`kto`: single answers tagged desirable or undesirable, each with a mismatched pair for the KL term.

KTO estimates its reference KL from answers paired with prompts they do not belong to: each row
also carries its prompt followed by the answer of the next row in the batch (`kl_*` columns). A
batch of one row has no other answer: that row is dropped rather than paired with itself.
"""

from __future__ import annotations

from typing import Any

from lf_data.processors.base import Context, encode_batch, split_answer
from lf_data.processors.truncation import IGNORE_INDEX, truncate_pair

COLUMNS = ("input_ids", "attention_mask", "labels", "kl_input_ids", "kl_attention_mask", "kl_labels", "kto_tags")


def _join(ctx: Context, prompt_ids: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    source_len, target_len = truncate_pair(len(prompt_ids), len(answer), ctx.cutoff_len)
    prompt_ids = prompt_ids[:source_len]
    prompt_labels = list(prompt_ids) if ctx.train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
    return prompt_ids + answer[:target_len], prompt_labels + answer[:target_len]


def tokenize_feedback(batch: dict[str, list[Any]], ctx: Context) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {key: [] for key in COLUMNS}
    n = len(batch["_prompt"])
    usable = []
    for i in range(n):
        prompt, response, system, tools = (batch[k][i] for k in ("_prompt", "_response", "_system", "_tools"))
        mismatched = batch["_response"][(i + 1) % n]
        if n > 1 and len(response) == 1 and len(mismatched) == 1 and batch["_kto_tag"][i] is not None:
            usable.append(i)
    conversations = []
    for i in usable:
        prompt, system, tools = batch["_prompt"][i], batch["_system"][i], batch["_tools"][i]
        conversations += [(prompt + batch["_response"][i], system, tools),
                          (prompt + batch["_response"][(i + 1) % n], system, tools)]
    encoded = iter(encode_batch(ctx, conversations))
    for i in range(n):
        ids = labels = kl_ids = kl_labels = []
        if i in usable:
            prompt_ids, answer = split_answer(next(encoded))
            _, kl_answer = split_answer(next(encoded))
            ids, labels = _join(ctx, prompt_ids, answer)
            kl_ids, kl_labels = _join(ctx, prompt_ids, kl_answer)
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
        out["kl_input_ids"].append(kl_ids)
        out["kl_attention_mask"].append([1] * len(kl_ids))
        out["kl_labels"].append(kl_labels)
        out["kto_tags"].append(bool(batch["_kto_tag"][i]))
    return out


def has_trainable_tokens(row: dict[str, Any]) -> bool:
    return any(t != IGNORE_INDEX for t in row["labels"]) and any(t != IGNORE_INDEX for t in row["kl_labels"])
