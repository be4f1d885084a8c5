"""LF's conversation roles and the conversions to and from OpenAI-style messages, kept in one place
so that datasets, templates and the server cannot disagree about what a conversation is."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

from lf_data.errors import DataError

USER, ASSISTANT, SYSTEM, OBSERVATION, FUNCTION = "user", "assistant", "system", "observation", "function"
USER_SIDE = (USER, OBSERVATION)
"""Turns the model answers: a user message or a tool result."""
ASSISTANT_SIDE = (ASSISTANT, FUNCTION)
"""The model's turns: an answer or tool calls."""
OPENAI_ROLES: dict[str, str] = {"system": SYSTEM, "developer": SYSTEM, "user": USER, "assistant": ASSISTANT,
                                "tool": OBSERVATION, "observation": OBSERVATION, "function": FUNCTION}
"""Role names accepted in OpenAI-style messages -> LF roles (LF's own names pass unchanged)."""


class Message(TypedDict):
    """An LF standard message: a role of USER_SIDE or ASSISTANT_SIDE and its text. A `function`
    message holds its tool calls as JSON (`dump_calls`)."""

    role: str
    content: str


class MessageError(DataError):
    """A message that cannot be converted or is out of turn; the text says which one."""


PartText = Callable[[int, Mapping[str, Any]], str]
"""Text for a content part that is not text (an image ...), given the message index and the part."""


def dump_calls(calls: Sequence[Mapping[str, Any]]) -> str:
    """The content of a `function` message: one call object, or a list of them."""
    return json.dumps(calls[0] if len(calls) == 1 else list(calls), ensure_ascii=False)


def load_calls(content: str) -> list[dict[str, Any]]:
    """The calls of a `function` message: a JSON object {"name", "arguments"} or a list of them."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError:
        raise MessageError(f"a function (tool call) message must be JSON {{\"name\", \"arguments\"}}, "
                           f"got {content[:80]!r}") from None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(c, dict) and "name" in c for c in calls):
        raise MessageError(f"each tool call needs a `name`, got {content[:80]!r}")
    return calls


def from_openai(messages: Sequence[Any], part_text: PartText | None = None) -> tuple[list[Message], str | None]:
    """OpenAI-style messages -> (LF standard messages, the leading system message's text or None).

    `tool` results become observations and assistant `tool_calls` a function message; LF's own roles
    pass unchanged, so converting twice changes nothing. Content is text, null or a list of parts:
    text parts are joined, any other part is written by `part_text` (refused without it).
    """
    out: list[Message] = []
    system = None
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise MessageError(f"messages[{i}] must be an object with a `role`.")
        given = message["role"]
        role = OPENAI_ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise MessageError(f"messages[{i}]: unknown role {given!r}; use system, user, assistant or tool.")
        if role == SYSTEM:
            if i != 0:
                raise MessageError(f"messages[{i}]: a system message may only come first.")
            system = _text(i, message.get("content"), None)
        elif role == ASSISTANT and message.get("tool_calls"):
            out.append({"role": FUNCTION, "content": dump_calls(_openai_calls(i, message["tool_calls"]))})
        else:
            out.append({"role": role, "content": _text(i, message.get("content"), part_text)})
    return out, system


def _text(i: int, content: Any, part_text: PartText | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise MessageError(f"messages[{i}]: content must be text.")
    pieces = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text") or "", str):
            pieces.append(part.get("text") or "")
        elif part_text is not None:
            pieces.append(part_text(i, part))
        else:
            raise MessageError(f"messages[{i}]: only text content is accepted here (images go in user messages).")
    return "".join(pieces)


def _openai_calls(i: int, tool_calls: Any) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list):
        raise MessageError(f"messages[{i}]: tool_calls must be a list.")
    calls = []
    for call in tool_calls:
        function = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise MessageError(f"messages[{i}]: each tool call needs a function name.")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                raise MessageError(f"messages[{i}]: tool call arguments must be JSON.") from None
        calls.append({"name": function["name"], "arguments": arguments})
    return calls


def check_turns(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise MessageError unless user-side and assistant-side turns alternate, starting with the user
    side (messages counted after the system prompt)."""
    for i, message in enumerate(messages):
        expected = USER_SIDE if i % 2 == 0 else ASSISTANT_SIDE
        if message["role"] not in expected:
            raise MessageError(f"message {i}: role {message['role']!r} is out of order; user (or observation) "
                               "and assistant (or function) messages must alternate, starting with the user")


def to_openai(messages: Sequence[Mapping[str, str]], system: str | None = None) -> list[dict[str, Any]]:
    """LF standard messages -> the Hugging Face chat shape (assistant `tool_calls`, role `tool`): what
    a tokenizer's chat template takes; `from_openai` reads it back."""
    out: list[dict[str, Any]] = [{"role": SYSTEM, "content": system}] if system else []
    for message in messages:
        role = message["role"]
        if role == FUNCTION:
            calls = [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
                     for c in load_calls(message["content"])]
            out.append({"role": ASSISTANT, "content": "", "tool_calls": calls})
        else:
            out.append({"role": "tool" if role == OBSERVATION else role, "content": message["content"]})
    return out


def to_openai_tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Calls in the OpenAI response shape (arguments as JSON text, a fresh id per call)."""
    out = []
    for call in calls:
        arguments = call["arguments"]
        out.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                    "function": {"name": call["name"],
                                 "arguments": arguments if isinstance(arguments, str)
                                 else json.dumps(arguments, ensure_ascii=False)}})
    return out
