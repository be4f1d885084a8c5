"""`pt`: plain text with an eos after each document, packed into `cutoff_len` blocks by default."""

from __future__ import annotations

from itertools import chain
from typing import Any

from lf_data.processors.base import Context


def _texts(batch: dict[str, list[Any]]) -> list[str]:
    # pre-training rows are plain text: the first prompt message (alpaca `prompt`, e.g. columns: {prompt: text})
    return [(prompt[0]["content"] if prompt else "") for prompt in batch["_prompt"]]


def tokenize_pretrain(batch: dict[str, list[Any]], ctx: Context) -> dict[str, list[Any]]:
    tok = ctx.tokenizer
    eos = tok.eos_token or ""
    encoded = tok([text + eos for text in _texts(batch)], add_special_tokens=True)["input_ids"]
    if not ctx.packing:
        ids = [seq[:ctx.cutoff_len] for seq in encoded]
        return {"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids], "labels": [list(s) for s in ids]}
    stream = list(chain.from_iterable(encoded))
    block = ctx.cutoff_len
    usable = (len(stream) // block) * block or len(stream)  # a batch shorter than one block stays whole
    blocks = [stream[i:i + block] for i in range(0, usable, block)]
    return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks], "labels": [list(b) for b in blocks]}


def has_tokens(row: dict[str, Any]) -> bool:
    return len(row["input_ids"]) > 1
