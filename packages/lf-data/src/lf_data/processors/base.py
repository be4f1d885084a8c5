"""What every stage's processor receives, and how conversations become token ids in bulk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lf_data import literal_text
from lf_data.aligner import place_markers

Pairs = list[tuple[list[int], list[int]]]


@dataclass(frozen=True)
class Context:
    template: Any  # lf_data.templates.Template | AutoTemplate
    tokenizer: Any
    cutoff_len: int
    train_on_prompt: bool = False
    mask_history: bool = False
    packing: bool = False
    neat_packing: bool = False
    enable_thinking: bool | None = None
    special_tokens_in_content: bool = False
    media_markers: dict[str, str] | None = None
    """Multimodal models: kind -> the model's marker each `<image>`/`<video>`/`<audio>` becomes."""


def batch_encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids of many texts without special tokens, straight from the Rust tokenizer when there is one;
    texts with protected message content (`lf_data.literal_text`) are encoded one by one."""
    if not texts:
        return []
    marked = [i for i, text in enumerate(texts) if literal_text.OPEN in text]
    if marked:
        ids = batch_encode(tokenizer, [literal_text.plain(text) for text in texts])
        for i in marked:
            ids[i] = literal_text.encode(tokenizer, texts[i])
        return ids
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # `encode_batch_fast` skips the character offsets nobody reads here
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_batch(ctx: Context, conversations: list[tuple[list[dict], str, str]]) -> list[Pairs]:
    """The template's (prompt ids, response ids) pairs for many conversations at once.

    Same ids as `template.encode_pairs` for each conversation (tested for every template), but all
    rendered pieces of the batch go through one call of the fast tokenizer instead of one call each.
    """
    if not ctx.special_tokens_in_content:  # a row's `<|im_start|>` text stays text
        conversations = [(*literal_text.protect_messages(messages, system, ctx.tokenizer), tools)
                         for messages, system, tools in conversations]
    if ctx.media_markers:  # after protecting: the markers are the model's own special tokens
        conversations = [(place_markers(messages, ctx.media_markers), system, tools)
                         for messages, system, tools in conversations]
    rendered = [ctx.template.render_pairs(messages, system, ctx.tokenizer, tools or None,
                                          enable_thinking=ctx.enable_thinking)
                for messages, system, tools in conversations]
    ids = iter(batch_encode(ctx.tokenizer, [piece for pairs in rendered for pair in pairs for piece in pair]))
    return [[(next(ids), next(ids)) for _ in pairs] for pairs in rendered]


def split_answer(pairs: Pairs, has_answer: bool = True) -> tuple[list[int], list[int]]:
    """(all prompt ids including earlier turns, ids of the final answer)."""
    prompt_ids = [t for source, target in pairs[:-1] for t in source + target] + pairs[-1][0]
    return prompt_ids, (pairs[-1][1] if has_answer else [])


EMPTY_ANSWER = {"role": "assistant", "content": ""}
