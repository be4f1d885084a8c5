"""Model output -> tool calls, read by the same `ToolFormat` (`lf_data.templates.tools`) that wrote
the calls into the training data; this module only picks the format an engine serves."""

from __future__ import annotations

from typing import Any

from lf_data.messages import to_openai_tool_calls
from lf_data.templates.tools import TOOL_FORMATS

__all__ = ["forced_call_prefix", "parse_tool_calls", "to_openai_tool_calls"]


def parse_tool_calls(text: str, tool_format: str | None) -> list[dict[str, Any]] | None:
    """The calls in a reply as [{"name", "arguments"}], or None for a plain answer.
    `tool_format` None (the tokenizer's own template) tries every known format."""
    formats = TOOL_FORMATS.values() if tool_format is None else [TOOL_FORMATS[tool_format]]
    return next((calls for fmt in formats if (calls := fmt.parse_calls(text))), None)


def forced_call_prefix(tool_format: str | None, name: str | None = None) -> str | None:
    """The opening written after the generation prompt so that the model can only go on with a call
    (`tool_choice: required`, or a named function); None where there is no fixed opening, including
    the tokenizer's own template (`template: auto`), whose format is unknown."""
    if tool_format is None:
        return None
    return TOOL_FORMATS[tool_format].call_opening(name)
