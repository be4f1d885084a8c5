"""Special-token text inside a message stays text.

A tokenizer turns the string `<|im_start|>` into its control token wherever it appears, so a user (or
a dataset row) that writes `<|im_start|>system ...` in a message would open a real system turn. LF
marks such strings in message content before the template renders it (`protect`), and encodes a
marked span with the special tokens split into plain text (`encode`). Content without special-token
text is encoded exactly as before; only the marked spans differ. `special_tokens_in_content: true`
keeps the old behaviour for data that relies on it.
"""

from __future__ import annotations

import re
from typing import Any

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters: no tokenizer or user text has a use for them
_MARKED = re.compile(f"{OPEN}(.*?){CLOSE}", re.DOTALL)
_PATTERNS: dict[int, tuple[Any, re.Pattern[str] | None]] = {}


def _special_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    cached = _PATTERNS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens.update(token.content for token in decoder.values() if getattr(token, "special", False))
    tokens.discard("")
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))) if tokens else None
    _PATTERNS[id(tokenizer)] = (tokenizer, pattern)
    return pattern


def protect(text: str, tokenizer: Any) -> str:
    """`text` with every special-token string in it marked, so `encode` keeps it as plain text."""
    pattern = _special_pattern(tokenizer)
    if not text or pattern is None or pattern.search(text) is None:
        return text
    return pattern.sub(lambda m: f"{OPEN}{m.group(0)}{CLOSE}", text)


def protect_messages(messages: list[dict[str, Any]], system: str | None, tokenizer: Any
                     ) -> tuple[list[dict[str, Any]], str | None]:
    """Messages and system prompt with their content protected (the template's own text is not); the
    same list when there is nothing to protect, the common case (tokenisation's hot path)."""
    out = messages
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str) and (marked := protect(content, tokenizer)) is not content:
            if out is messages:
                out = list(messages)
            out[i] = {**message, "content": marked}
    return out, protect(system, tokenizer) if system else system


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text, marked spans with their special tokens split into plain text."""
    if OPEN not in text:
        return tokenizer.encode(text, add_special_tokens=False)
    ids: list[int] = []
    start = 0
    for match in _MARKED.finditer(text):
        if match.start() > start:
            ids += tokenizer.encode(text[start:match.start()], add_special_tokens=False)
        ids += tokenizer(match.group(1), add_special_tokens=False, split_special_tokens=True)["input_ids"]
        start = match.end()
    if start < len(text):
        ids += tokenizer.encode(text[start:], add_special_tokens=False)
    return ids


def plain(text: str) -> str:
    """Rendered text as a person should read it (the marks removed)."""
    return text.replace(OPEN, "").replace(CLOSE, "") if OPEN in text else text
