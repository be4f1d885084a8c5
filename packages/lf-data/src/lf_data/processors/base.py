"""What every stage's processor receives, and how conversations become token ids in bulk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


class _Piece(int):
    """Stands for the ids of the n-th recorded text until the whole batch is tokenised."""


class _RecordingTokenizer:
    """Looks like the real tokenizer, but `encode` only records the text.

    Templates tokenise each rendered piece with `tokenizer.encode`; one call per piece is slow in
    Python. Recording the pieces of a whole batch and encoding them in one batched call of the
    fast tokenizer gives the same ids several times faster.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.texts: list[str] = []
        self.bos_token = tokenizer.bos_token  # read for every piece: plain attributes, not __getattr__
        self.eos_token = tokenizer.eos_token

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        if add_special_tokens or kwargs:
            return self._tokenizer.encode(text, add_special_tokens=add_special_tokens, **kwargs)
        self.texts.append(text)
        return [_Piece(len(self.texts) - 1)]


def batch_encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids of many texts without special tokens, straight from the Rust tokenizer when there is one."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_batch(ctx: Context, conversations: list[tuple[list[dict], str, str]]) -> list[Pairs]:
    """The template's (prompt ids, response ids) pairs for many conversations at once."""
    recorder = _RecordingTokenizer(ctx.tokenizer)
    recorded = []
    for messages, system, tools in conversations:
        if tools:
            recorded.append(ctx.template.encode_pairs(recorder, messages, system, tools))
        else:
            recorded.append(ctx.template.encode_pairs(recorder, messages, system))
    ids = batch_encode(ctx.tokenizer, recorder.texts)

    def expand(tokens: list[int]) -> list[int]:
        out: list[int] = []
        for token in tokens:
            if isinstance(token, _Piece):
                out += ids[token]
            else:
                out.append(token)
        return out

    return [[(expand(source), expand(target)) for source, target in pairs] for pairs in recorded]


def split_answer(pairs: Pairs, has_answer: bool = True) -> tuple[list[int], list[int]]:
    """(all prompt ids including earlier turns, ids of the final answer)."""
    prompt_ids = [t for source, target in pairs[:-1] for t in source + target] + pairs[-1][0]
    return prompt_ids, (pairs[-1][1] if has_answer else [])


EMPTY_ANSWER = {"role": "assistant", "content": ""}
