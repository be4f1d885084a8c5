"""What every stage's processor receives, and the prompt/response split they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Context:
    template: Any  # lf_data.templates.Template | AutoTemplate
    tokenizer: Any
    cutoff_len: int
    train_on_prompt: bool = False
    mask_history: bool = False
    packing: bool = False
    neat_packing: bool = False


def encode(ctx: Context, messages: list[dict], system: str, tools: str) -> list[tuple[list[int], list[int]]]:
    """The template's (prompt ids, response ids) pairs for one conversation."""
    if tools:
        return ctx.template.encode_pairs(ctx.tokenizer, messages, system, tools)
    return ctx.template.encode_pairs(ctx.tokenizer, messages, system)


def prompt_and_answer(ctx: Context, prompt: list[dict], answer: dict | None, system: str,
                      tools: str) -> tuple[list[int], list[int]]:
    """(all prompt ids including earlier turns, answer ids) for a conversation's final answer.

    Without an answer (prompt-only data) the answer ids are empty and the prompt ends with the
    generation prompt.
    """
    messages = prompt + [answer or {"role": "assistant", "content": ""}]
    pairs = encode(ctx, messages, system, tools)
    prompt_ids = [t for source, target in pairs[:-1] for t in source + target] + pairs[-1][0]
    return prompt_ids, (pairs[-1][1] if answer is not None else [])
