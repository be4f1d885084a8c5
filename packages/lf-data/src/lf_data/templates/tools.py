"""Tool formats: how tool definitions, tool calls and their slots look in each model family.

A template names one format (`Template.tool_format`). Every format is plain data (strings with
slots), so the same definition gives both the Python rendering used in training and the Jinja
that is saved with the tokenizer; a test checks that the two agree for every template.

Slots in `per_tool`: {name}, {function_json} (the bare function definition), {tool_json}
(wrapped as {"type": "function", "function": ...}), and their `_indent` variants (indent=4).
Slots in `per_call`: {name}, {name_json} (the name as a JSON string) and {args} (the arguments as
JSON text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lf_data.errors import DataError

_SLOT = re.compile(r"\{(name|name_json|args|function_json|tool_json|function_json_indent|tool_json_indent)\}")


@dataclass(frozen=True)
class ToolFormat:
    name: str
    header: str
    per_tool: str
    footer: str = ""
    tool_sep: str = ""
    tools_first: bool = False
    """Tool text goes before the system prompt (else after it, separated by a blank line)."""
    per_call: str = '{"name": {name_json}, "arguments": {args}}'
    call_sep: str = "\n"
    call_prefix: str = ""
    call_suffix: str = ""

    # -- python -----------------------------------------------------------------------------------
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

    def call_text(self, calls: list[dict[str, Any]]) -> str:
        """The text of an assistant turn that calls `calls` ({"name", "arguments"} objects)."""
        def one(call: dict[str, Any]) -> str:
            args = call.get("arguments", {})
            values = {"name": str(call["name"]), "name_json": _dumps(call["name"]),
                      "args": args if isinstance(args, str) else _dumps(args)}
            return _SLOT.sub(lambda m: values[m.group(1)], self.per_call)

        return self.call_prefix + self.call_sep.join(one(c) for c in calls) + self.call_suffix

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

    def jinja_call_text(self) -> str:
        """Jinja that outputs `call_text` of `message.tool_calls` (OpenAI shape, arguments dict or str)."""
        slots = {"name": "c.name", "name_json": "c.name | tojson",
                 "args": "(c.arguments if c.arguments is string else c.arguments | tojson)"}
        return (jinja_literal(self.call_prefix)
                + "{%- for call in message.tool_calls -%}"
                + "{%- set c = call.function if call.function is defined else call -%}"
                + ("{%- if not loop.first -%}" + jinja_literal(self.call_sep) + "{%- endif -%}" if self.call_sep else "")
                + jinja_fill(self.per_call, slots)
                + "{%- endfor -%}" + jinja_literal(self.call_suffix))


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


def parse_calls(content: str) -> list[dict[str, Any]]:
    """The tool calls of a `function` message: a JSON object {"name", "arguments"} or a list of them."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError:
        raise DataError(f"a function (tool call) message must be JSON {{\"name\", \"arguments\"}}, got {content[:80]!r}") \
            from None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(c, dict) and "name" in c for c in calls):
        raise DataError(f"each tool call needs a `name`, got {content[:80]!r}")
    return calls


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
        per_call='<tool_call>\n{"name": {name_json}, "arguments": {args}}\n</tool_call>',
    ),
    # Llama 3.1+: JSON with "parameters"; results come back in the ipython role
    ToolFormat(
        name="llama3",
        header="You have access to the following functions. To call a function, please respond with JSON for a "
               "function call. Respond in the format {\"name\": function name, \"parameters\": dictionary of "
               "argument name and its value}. Do not use variables.\n\n",
        per_tool="{tool_json_indent}\n\n", tools_first=True,
        per_call='{"name": {name_json}, "parameters": {args}}',
    ),
    # Mistral v3 tokenizers: [AVAILABLE_TOOLS] ... [/AVAILABLE_TOOLS], [TOOL_CALLS] [...]
    ToolFormat(name="mistral", header="[AVAILABLE_TOOLS] [", per_tool="{tool_json}", tool_sep=", ",
               footer="][/AVAILABLE_TOOLS]", tools_first=True,
               call_prefix="[TOOL_CALLS] [", call_sep=", ", call_suffix="]"),
    # GLM-4: a Markdown list of tools; a call is the tool name, a newline and the arguments
    ToolFormat(
        name="glm4",
        header="你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
               "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具",
        per_tool="\n\n## {name}\n\n{function_json_indent}\n在调用上述函数时，请使用 Json 格式表示调用的参数。",
        per_call="{name}\n{args}",
    ),
]}
