"""Cheap bounds on what one request may ask for, checked before any tokenising, media decoding or
generating, so that a single client cannot make the server spend seconds (or fail) on one request.

The API's schema (`lf_serve.api.protocol`) and the engine (`lf_serve.engine`) both use these, so a
request through `lf api` and a call to `engine.chat` meet the same limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lf_serve.errors import RequestError

MAX_N = 16
"""Answers per prompt (`n`)."""
MAX_CHOICES = 64
"""Answers per request: `n` times the number of prompts of /v1/completions."""
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 4096
"""Stop strings are matched against every new token of every row: their number and size are capped."""
MAX_MEDIA = {"images": 16, "videos": 4, "audios": 8}
"""Items of each kind per request (each one also capped in bytes and pixels, `lf_serve.media_sources`)."""
MAX_VIDEO_DECODED_PIXELS = 2**29
"""A video's frames x width x height, read from its header and packets before any frame is decoded: what
reading it may hold in memory (every frame is decoded before video_fps sampling), 1.5 GB of RGB."""
MAX_AUDIO_SECONDS = 600.0
"""Longest sound a request may bring (its header's frames / sample rate)."""
MEDIA_PARTS = {"image_url": "images", "video_url": "videos", "audio_url": "audios", "input_audio": "audios"}
"""OpenAI message content parts that carry media -> the kind (lf-data's column name) each one is."""
CHARS_PER_TOKEN = 16
"""`max_prompt_chars` defaults to this many characters per token of the model's context: real text
averages about 4 (English) per token, so a prompt 16 times the context could never fit and is refused
unread, before the tokenizer spends seconds on it."""
REPETITION_PENALTY = (0.01, 10.0)
"""Legal `repetition_penalty` (inclusive). A tinier one (1e-300 is 0 in float32) divides logits into
inf and sampling meets NaN probabilities; above 10 a penalty does nothing more that is useful."""
SEED = (-(2**63), 2**64 - 1)
"""Legal `seed`: what torch's generators accept."""
MIN_SAMPLING_TEMPERATURE = 1e-3
"""Below this `temperature` decoding is greedy: logits divided by a subnormal one (1e-40) overflow to inf
and sampling meets NaN; between, sampling is greedy in all but name."""


def stop_problem(stop: Any) -> str | None:
    """Why `stop` (a string or a list of strings) is over the caps, or None."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    total = sum(len(s) for s in stops if isinstance(s, str))
    if len(stops) > MAX_STOP_STRINGS or total > MAX_STOP_CHARS:
        return (f"stop takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_CHARS} characters in all; "
                f"got {len(stops)} string(s) of {total} characters.")
    return None


def _strings(value: Any, counted: bool = True) -> Iterator[tuple[str, bool]]:
    """Every string in a JSON-like value, and whether it is prompt text (media references are not)."""
    if isinstance(value, str):
        yield value, counted
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield key, False
            yield from _strings(item, counted and key not in MEDIA_PARTS)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, counted)


def check_code_points(text: str, where: str, param: str) -> None:
    """Refuse a lone surrogate ("\\ud800"): JSON can carry one, no tokenizer can encode it."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RequestError(f"{where} holds an invalid code point ({text[err.start]!r}, a lone surrogate) at "
                           f"character {err.start}; send valid Unicode text.", param) from None


def scan(value: Any, where: str, param: str) -> int:
    """The characters of prompt text in `value` (a message, a prompt, tools), every string checked for
    lone surrogates; media references are checked but not counted."""
    chars = 0
    for text, counted in _strings(value):
        check_code_points(text, where, param)
        chars += len(text) if counted else 0
    return chars


def count_media(messages: Any) -> dict[str, int]:
    """The media parts of OpenAI-style messages by kind (image_url, video_url, audio_url, input_audio)."""
    counts = dict.fromkeys(MAX_MEDIA, 0)
    for m in messages if isinstance(messages, list) else []:
        for part in m["content"] if isinstance(m, dict) and isinstance(m.get("content"), list) else []:
            kind = MEDIA_PARTS.get(part.get("type")) if isinstance(part, dict) else None
            if kind is not None:
                counts[kind] += 1
    return counts
