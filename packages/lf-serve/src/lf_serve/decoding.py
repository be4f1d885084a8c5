"""Token ids -> text, one generated sequence at a time: incremental text pieces for streaming,
stop strings and eos, and the finish reason.

Text that could still turn into a stop string (or is half a UTF-8 character) is held back until
the next token decides, so a streamed answer never shows a stop word and never has to take text
back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Emit = Callable[[str, str | None, int], None]
"""emit(text piece, finish reason or None, tokens generated so far)."""


class RowDecoder:
    def __init__(self, tokenizer: Any, eos_ids: set[int], stop: tuple[str, ...], max_new_tokens: int,
                 skip_special_tokens: bool, emit: Emit) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.stop = tuple(s for s in stop if s)
        self.max_new_tokens = max_new_tokens
        self.skip_special_tokens = skip_special_tokens
        self.emit = emit
        self.ids: list[int] = []
        self.generated = 0  # tokens generated, eos included (the usage count)
        self.sent = 0  # characters of the text already emitted
        self.finish_reason: str | None = None
        self.decoded = ""  # the text of ids[:read], complete characters only
        self.window = 0  # ids[window:read] are decoded again with each new token, for the text they lead into
        self.read = 0

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def feed(self, token: int) -> bool:
        """Take one generated token; True once the sequence is finished."""
        if self.done:
            return True
        self.generated += 1
        if token in self.eos_ids:
            return self.finish("stop", self._text())
        self.ids.append(token)
        text = self._text()
        cut = min((i for i in (text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            return self.finish("stop", text[:cut])
        if len(self.ids) >= self.max_new_tokens:
            return self.finish("length", text)
        safe = len(text)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            safe = len(text.rstrip("\ufffd"))
        head = text[:safe]
        for s in self.stop:  # the end of the text may be the start of a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if head.endswith(s[:k]):
                    safe -= k
                    head = text[:safe]
                    break
        if safe > self.sent:
            self.emit(text[self.sent:safe], None, self.generated)
            self.sent = safe
        return False

    def finish(self, reason: str, text: str | None = None) -> bool:
        if self.done:
            return True
        text = self._text() if text is None else text
        self.finish_reason = reason
        self.emit(text[self.sent:], reason, self.generated)
        self.sent = len(text)
        return True

    def _text(self) -> str:
        """The text of every id so far, decoded incrementally (the offsets vLLM and TGI use): the ids since
        the last complete text and the one before them are decoded again, so a long answer costs O(n)
        decoding instead of O(n^2). The token before keeps word-initial spaces and merged bytes right."""
        decode = self.tokenizer.decode
        before = decode(self.ids[self.window:self.read], skip_special_tokens=self.skip_special_tokens)
        after = decode(self.ids[self.window:], skip_special_tokens=self.skip_special_tokens)
        if not after.startswith(before):  # a window's text is not its text in context: decode it all once
            text = decode(self.ids, skip_special_tokens=self.skip_special_tokens)
            if not text.endswith("\ufffd"):
                self.decoded, self.window, self.read = text, max(len(self.ids) - 1, 0), len(self.ids)
            return text
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.decoded += after[len(before):]
            self.window, self.read = self.read, len(self.ids)
            return self.decoded
        return self.decoded + after[len(before):]
