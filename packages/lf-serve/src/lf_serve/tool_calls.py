"""Model output -> tool calls, read with the same tool format (`lf_data.templates.tools`) that wrote
the calls into the training data, so a model answers in exactly the shape it was trained on.

A reply counts as tool calls only when all of it is calls (plus the format's own wrappers and
separators); an answer that merely quotes some JSON stays a plain answer.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from lf_data.templates.tools import TOOL_FORMATS, ToolFormat

_ARGS_KEY = re.compile(r'"(\w+)":\s*\{args\}')


def _json_call_shape(fmt: ToolFormat) -> tuple[str, str, str] | None:
    """(opening text, closing text, arguments key) of a format whose call is a JSON object, else None."""
    start = fmt.per_call.find('{"name"')
    end = fmt.per_call.rfind("{args}}")
    match = _ARGS_KEY.search(fmt.per_call)
    if start < 0 or end < 0 or match is None:
        return None
    return fmt.per_call[:start], fmt.per_call[end + len("{args}}"):], match.group(1)


def _strip_wrappers(text: str, fmt: ToolFormat) -> str:
    text = text.strip()
    if fmt.call_prefix and text.startswith(fmt.call_prefix.strip()):
        text = text[len(fmt.call_prefix.strip()):]
        if fmt.call_suffix and text.rstrip().endswith(fmt.call_suffix.strip()):
            text = text.rstrip()[: -len(fmt.call_suffix.strip())]
    elif fmt.call_prefix:
        return ""
    return text


def _parse_json_calls(text: str, fmt: ToolFormat, shape: tuple[str, str, str]) -> list[dict[str, Any]] | None:
    opening, closing, args_key = (s.strip() for s in shape)
    separator = fmt.call_sep.strip()
    decoder = json.JSONDecoder()
    calls, pos = [], 0
    text = _strip_wrappers(text, fmt)
    while True:
        while pos < len(text) and (text[pos].isspace() or (separator and text.startswith(separator, pos))):
            pos += len(separator) if separator and text.startswith(separator, pos) else 1
        if pos >= len(text):
            break
        if opening:
            if not text.startswith(opening, pos):
                return None
            pos += len(opening)
            while pos < len(text) and text[pos].isspace():
                pos += 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        arguments = value.get(args_key, value.get("arguments", value.get("parameters", {})))
        calls.append({"name": value["name"], "arguments": arguments})
        if closing:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if not text.startswith(closing, pos):
                return None
            pos += len(closing)
    return calls or None


def _parse_name_then_args(text: str) -> list[dict[str, Any]] | None:
    """GLM-4: the tool name on one line, the arguments JSON below it."""
    name, _, rest = text.strip().partition("\n")
    if not re.fullmatch(r"[\w.\-]+", name.strip()):
        return None
    try:
        arguments = json.loads(rest)
    except json.JSONDecodeError:
        return None
    return [{"name": name.strip(), "arguments": arguments}] if isinstance(arguments, dict) else None


def parse_tool_calls(text: str, tool_format: str | None) -> list[dict[str, Any]] | None:
    """The calls in a reply as [{"name", "arguments" (a dict or JSON text)}], or None for a plain answer.
    `tool_format` None (the tokenizer's own template) tries every known format."""
    if tool_format is None:
        return next((calls for name in TOOL_FORMATS if (calls := parse_tool_calls(text, name))), None)
    fmt = TOOL_FORMATS[tool_format]
    shape = _json_call_shape(fmt)
    if shape is not None:
        return _parse_json_calls(text, fmt, shape)
    return _parse_name_then_args(text)


def to_openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parsed calls in the OpenAI response shape (arguments as JSON text, a fresh id per call)."""
    out = []
    for call in calls:
        arguments = call["arguments"]
        out.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                    "function": {"name": call["name"],
                                 "arguments": arguments if isinstance(arguments, str)
                                 else json.dumps(arguments, ensure_ascii=False)}})
    return out


def forced_call_prefix(tool_format: str | None, name: str | None = None) -> str | None:
    """The text every tool-calling reply in `tool_format` starts with (with `name`: a call of that tool),
    written after the generation prompt so the model can only go on with a call (`tool_choice: required`
    or a named function). None where no fixed opening exists: GLM-4 replies start with the bare tool
    name, so only a named call can be forced there; the tokenizer's own template (`template: auto`) has
    no known format. Trailing whitespace is left to the model: byte-level BPE joins it to the next word."""
    if tool_format is None:
        return None
    fmt = TOOL_FORMATS[tool_format]
    text = fmt.call_prefix + fmt.per_call
    if name is not None:
        text = text.replace("{name_json}", json.dumps(name, ensure_ascii=False)).replace("{name}", name)
    slot = re.search(r"\{(name|name_json|args)\}", text)
    prefix = (text[:slot.start()] if slot else text).rstrip()
    return prefix or None
