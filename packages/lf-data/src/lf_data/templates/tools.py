"""Tool formats: how tool definitions and tool calls look in each model family.

A template names one format (`Template.tool_format`). The same class writes tool calls into prompts
(Python and the Jinja saved with the tokenizer) and reads them back out of model replies, so a
served model is parsed in exactly the shape it was trained on.

Slots in `per_tool`: {name}, {function_json} (the bare function definition), {tool_json}
(wrapped as {"type": "function", "function": ...}), and their `_indent` variants (indent=4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lf_data.errors import DataError

_SLOT = re.compile(r"\{(name|function_json|tool_json|function_json_indent|tool_json_indent)\}")
_JINJA_ARGS = "(c.arguments if c.arguments is string else c.arguments | tojson)"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolFormat:
    """A tool call is a JSON object {"name": ..., `args_key`: ...} between `call_open` and
    `call_close`; the calls of one turn are joined by `call_sep` inside `call_prefix` / `call_suffix`."""

    name: str
    header: str
    per_tool: str
    footer: str = ""
    tool_sep: str = ""
    tools_first: bool = False
    """Tool text goes before the system prompt (else after it, separated by a blank line)."""
    call_open: str = ""
    call_close: str = ""
    args_key: str = "arguments"
    call_sep: str = "\n"
    call_prefix: str = ""
    call_suffix: str = ""

    # -- tool definitions -------------------------------------------------------------------------
    def tool_text(self, functions: list[dict[str, Any]]) -> str:
        """The text describing `functions` (bare function definitions) to the model."""
        def one(function: dict[str, Any]) -> str:
            wrapped = {"type": "function", "function": function}
            values = {"name": str(function.get("name", "")), "function_json": _dumps(function),
                      "tool_json": _dumps(wrapped), "function_json_indent": _dumps(function, 4),
                      "tool_json_indent": _dumps(wrapped, 4)}
            return _SLOT.sub(lambda m: values[m.group(1)], self.per_tool)

        return self.header + self.tool_sep.join(one(f) for f in functions) + self.footer

    def with_system(self, system: str, tool_text: str) -> str:
        if self.tools_first:
            return tool_text + system
        return f"{system}\n\n{tool_text}" if system else tool_text

    # -- tool calls: writing ----------------------------------------------------------------------
    def format_calls(self, calls: list[dict[str, Any]]) -> str:
        """The text of an assistant turn that calls `calls` ({"name", "arguments"} objects; arguments
        a dict or JSON text)."""
        def one(call: dict[str, Any]) -> str:
            args = call.get("arguments", {})
            return self._format_call(str(call["name"]), args if isinstance(args, str) else _dumps(args))

        return self.call_prefix + self.call_sep.join(one(c) for c in calls) + self.call_suffix

    def _format_call(self, name: str, args: str) -> str:
        return f'{self.call_open}{{"name": {_dumps(name)}, "{self.args_key}": {args}}}{self.call_close}'

    def _jinja_call(self) -> str:
        """Jinja of `_format_call` for a call `c`."""
        return (jinja_literal(self.call_open + '{"name": ') + "{{ c.name | tojson }}"
                + jinja_literal(f', "{self.args_key}": ') + "{{ " + _JINJA_ARGS + " }}"
                + jinja_literal("}" + self.call_close))

    def call_opening(self, name: str | None = None) -> str | None:
        """The text every reply calling a tool starts with (with `name`: a call of that tool); None
        where there is no fixed opening. Trailing whitespace is left out: byte-level BPE joins it
        to the next word."""
        head = self.call_prefix + self.call_open + '{"name":'
        return head if name is None else f'{head} {_dumps(name)}, "{self.args_key}":'

    # -- tool calls: reading ----------------------------------------------------------------------
    def parse_calls(self, text: str) -> list[dict[str, Any]] | None:
        """The calls in a model reply written as `format_calls` writes them, [{"name", "arguments"}],
        or None unless the reply is calls only (an answer that quotes a call stays an answer)."""
        text = text.strip()
        prefix, suffix = self.call_prefix.strip(), self.call_suffix.strip()
        if prefix:
            if not text.startswith(prefix):
                return None
            text = text[len(prefix):].rstrip()
            if suffix and text.endswith(suffix):
                text = text[:-len(suffix)]
        separator = self.call_sep.strip()
        calls, pos = [], 0
        while True:
            while pos < len(text) and (text[pos].isspace() or (separator and text.startswith(separator, pos))):
                pos += len(separator) if separator and text.startswith(separator, pos) else 1
            if pos >= len(text):
                return calls or None
            parsed = self._parse_call(text, pos)
            if parsed is None:
                return None
            call, pos = parsed
            calls.append(call)

    def _parse_call(self, text: str, pos: int) -> tuple[dict[str, Any], int] | None:
        """The call written by `_format_call` at `pos`, and where it ends."""
        opening, closing = self.call_open.strip(), self.call_close.strip()
        if opening:
            if not text.startswith(opening, pos):
                return None
            pos = _skip_space(text, pos + len(opening))
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        arguments = value.get(self.args_key, value.get("arguments", value.get("parameters", {})))
        if closing:
            pos = _skip_space(text, pos)
            if not text.startswith(closing, pos):
                return None
            pos += len(closing)
        return {"name": value["name"], "arguments": arguments}, pos

    # -- jinja ------------------------------------------------------------------------------------
    def jinja_tool_text(self) -> str:
        """Jinja that outputs `tool_text(tools)`; accepts wrapped and bare tool definitions."""
        slots = {"name": "f.name", "function_json": "f | tojson", "tool_json": "{'type': 'function', 'function': f} | tojson",
                 "function_json_indent": "f | tojson(indent=4)",
                 "tool_json_indent": "{'type': 'function', 'function': f} | tojson(indent=4)"}
        return (jinja_literal(self.header)
                + "{%- for tool in tools -%}"
                + "{%- set f = tool.function if tool.function is defined else tool -%}"
                + ("{%- if not loop.first -%}" + jinja_literal(self.tool_sep) + "{%- endif -%}" if self.tool_sep else "")
                + jinja_fill(self.per_tool, slots)
                + "{%- endfor -%}" + jinja_literal(self.footer))

    def jinja_with_system(self) -> str:
        """A Jinja statement that sets `system` to the system prompt joined with `tool_text`."""
        if self.tools_first:
            return "{%- set system = tool_text + system -%}"
        return "{%- set system = (system + '\\n\\n' + tool_text) if system else tool_text -%}"

    def jinja_format_calls(self) -> str:
        """Jinja that outputs `format_calls` of `message.tool_calls` (OpenAI shape, arguments dict or str)."""
        return (jinja_literal(self.call_prefix)
                + "{%- for call in message.tool_calls -%}"
                + "{%- set c = call.function if call.function is defined else call -%}"
                + ("{%- if not loop.first -%}" + jinja_literal(self.call_sep) + "{%- endif -%}" if self.call_sep else "")
                + self._jinja_call()
                + "{%- endfor -%}" + jinja_literal(self.call_suffix))


_NAME_LINE = re.compile(r"[ \t]*([\w.\-]+)[ \t]*\n")


@dataclass(frozen=True)
class NameLineToolFormat(ToolFormat):
    """A call is the tool name on one line and its arguments JSON below it (GLM-4)."""

    def _format_call(self, name: str, args: str) -> str:
        return f"{name}\n{args}"

    def _jinja_call(self) -> str:
        return "{{ c.name }}" + jinja_literal("\n") + "{{ " + _JINJA_ARGS + " }}"

    def call_opening(self, name: str | None = None) -> str | None:
        return name  # a reply starts with the bare name: only a named call has a fixed opening

    def _parse_call(self, text: str, pos: int) -> tuple[dict[str, Any], int] | None:
        match = _NAME_LINE.match(text, pos)
        if match is None:
            return None
        try:
            arguments, pos = _DECODER.raw_decode(text, _skip_space(text, match.end()))
        except json.JSONDecodeError:
            return None
        return ({"name": match.group(1), "arguments": arguments}, pos) if isinstance(arguments, dict) else None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _dumps(value: Any, indent: int | None = None) -> str:
    # the same as transformers' Jinja `tojson` filter
    return json.dumps(value, ensure_ascii=False, indent=indent)


def jinja_literal(text: str) -> str:
    if not text:
        return ""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return "{{ '" + escaped + "' }}"


def jinja_fill(fmt: str, slots: dict[str, str]) -> str:
    """Jinja output of a format string whose `{slot}`s are the given Jinja expressions."""
    pattern = re.compile(r"\{(" + "|".join(re.escape(s) for s in slots) + r")\}")
    out, last = [], 0
    for match in pattern.finditer(fmt):
        out.append(jinja_literal(fmt[last:match.start()]))
        out.append("{{ " + slots[match.group(1)] + " }}")
        last = match.end()
    out.append(jinja_literal(fmt[last:]))
    return "".join(out)


def parse_tools(tools: str | list | None) -> list[dict[str, Any]]:
    """Tool definitions (a JSON string or list; wrapped OpenAI shape or bare) -> bare functions."""
    if not tools:
        return []
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise DataError(f"tools must be a JSON list of tool definitions: {err}") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise DataError("tools must be a JSON list of tool definitions")
    return [t["function"] if isinstance(t, dict) and isinstance(t.get("function"), dict) else t for t in tools]


_JSON_CALL = '{"name": <tool name>, "arguments": <arguments object>}'

TOOL_FORMATS: dict[str, ToolFormat] = {f.name: f for f in [
    # families with no tool format of their own: JSON definitions in, JSON calls out
    ToolFormat(name="default", header="You have access to the following tools:", per_tool="\n{function_json}",
               footer=f"\n\nTo call tools, reply with one JSON object per call, one per line: {_JSON_CALL}"),
    # Qwen / Hermes: <tools> in the system prompt, <tool_call> blocks, <tool_response> observations
    ToolFormat(
        name="qwen",
        header="# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        per_tool="\n{tool_json}",
        footer="\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
               "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}\n</tool_call>",
        call_open="<tool_call>\n", call_close="\n</tool_call>",
    ),
    # Llama 3.1+: JSON with "parameters"; results come back in the ipython role
    ToolFormat(
        name="llama3",
        header="You have access to the following functions. To call a function, please respond with JSON for a "
               "function call. Respond in the format {\"name\": function name, \"parameters\": dictionary of "
               "argument name and its value}. Do not use variables.\n\n",
        per_tool="{tool_json_indent}\n\n", tools_first=True,
        args_key="parameters",
    ),
    # Mistral v3 tokenizers: [AVAILABLE_TOOLS] ... [/AVAILABLE_TOOLS], [TOOL_CALLS] [...]
    ToolFormat(name="mistral", header="[AVAILABLE_TOOLS] [", per_tool="{tool_json}", tool_sep=", ",
               footer="][/AVAILABLE_TOOLS]", tools_first=True,
               call_prefix="[TOOL_CALLS] [", call_sep=", ", call_suffix="]"),
    # GLM-4: a Markdown list of tools; a call is the tool name, a newline and the arguments
    NameLineToolFormat(
        name="glm4",
        header="你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
               "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具",
        per_tool="\n\n## {name}\n\n{function_json_indent}\n在调用上述函数时，请使用 Json 格式表示调用的参数。",
    ),
]}
"""Every tool format by name: the one place both the templates and the server look them up."""
