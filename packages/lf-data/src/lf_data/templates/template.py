"""A chat template: how one conversation becomes (prompt, response) text pairs and token ids.

A template is a handful of format strings with a ``{content}`` slot (and ``{bos}`` / ``{eos}`` for
the tokenizer's special tokens), a tool format (`tools.py`) and, for reasoning models, how
``<think>`` blocks are written. The same data gives the training tokenisation and a Jinja chat
template that is saved with the tokenizer, so plain ``transformers`` builds the same prompts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from lf_data import literal_text
from lf_data.messages import FUNCTION, OBSERVATION, USER, Message, load_calls, to_openai
from lf_data.templates.tools import TOOL_FORMATS, jinja_fill, jinja_literal, parse_tools

Pairs = list[tuple[list[int], list[int]]]
_SLOT = re.compile(r"\{(content|bos|eos)\}")


class Tokenizer(Protocol):
    bos_token: str | None
    eos_token: str | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Thought:
    """How a reasoning family writes its thinking. Datasets mark it as ``<think>...</think>`` in
    the assistant content; the template writes it in the family's own words."""

    open: str = "<think>\n"
    close: str = "\n</think>\n\n"
    strip_history: bool = True
    """Turns before the last user message lose their reasoning (as Qwen3's and R1's templates do)."""
    always_block: bool = False
    """The final answer always opens with a (possibly empty) block, as Qwen3 renders it."""
    answer_prefix: str = ""
    """Text before an answer that has no reasoning block (gpt-oss: the final channel)."""
    nothink: str | None = None
    """Appended to the generation prompt when thinking is off; default the empty block."""

    @property
    def nothink_text(self) -> str:
        return self.open + self.close if self.nothink is None else self.nothink


def split_thought(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message that may contain ``<think>...</think>``."""
    if "</think>" not in content:
        return "", content
    head, _, _ = content.partition("</think>")
    return head.split("<think>")[-1], content.split("</think>")[-1].lstrip("\n")


@dataclass(frozen=True)
class Template:
    name: str
    format_user: str
    format_assistant: str
    format_system: str = "{content}"
    format_observation: str = ""
    """A tool result turn; defaults to `format_user`."""
    format_function: str = ""
    """An assistant turn that calls tools (its content is the tool format's call text); defaults to
    `format_assistant`."""
    generation_prompt: str = ""
    """Text that opens an assistant turn; part of the prompt, never trained on."""
    prefix: str = ""
    """Text before the whole conversation (typically `{bos}`)."""
    default_system: str = ""
    system_in_user: bool = False
    """The formatted system prompt goes inside the first user message (families with no system role)."""
    stop_words: tuple[str, ...] = ()
    """Strings that end generation besides the tokenizer's eos."""
    tool_format: str = "default"
    thought: Thought | None = None
    enable_thinking: bool = True
    """Default of the `enable_thinking` option (reasoning templates only)."""

    # -- text -------------------------------------------------------------------------------------
    @staticmethod
    def _fill(fmt: str, content: str, tokenizer: Tokenizer) -> str:
        if "{" not in fmt:  # most pieces have no slot: skip the regular expression (a hot path)
            return fmt
        values = {"content": content, "bos": tokenizer.bos_token or "", "eos": tokenizer.eos_token or ""}
        return _SLOT.sub(lambda m: values[m.group(1)], fmt)

    def system_prompt(self, system: str | None, tools: str | list | None) -> str:
        """The system prompt with the tool definitions in the family's format."""
        system = system or self.default_system
        functions = parse_tools(tools)
        if functions:
            fmt = TOOL_FORMATS[self.tool_format]
            system = fmt.with_system(system, fmt.tool_text(functions))
        return system

    def _answer(self, message: Message, is_last: bool, history: bool, thinking: bool) -> str:
        """The text of one assistant-side turn, reasoning written (or dropped) as the family does."""
        if message["role"] == FUNCTION:
            reasoning, body = "", TOOL_FORMATS[self.tool_format].format_calls(load_calls(message["content"]))
        elif self.thought is None:
            return message["content"]
        else:
            reasoning, body = split_thought(message["content"])
        t = self.thought
        if t is None:
            return body
        if not thinking:
            return body if is_last else t.answer_prefix + body
        if history and t.strip_history:
            return t.answer_prefix + body
        if (is_last and t.always_block) or reasoning:
            return t.open + reasoning.strip("\n") + t.close + body.lstrip("\n")
        return t.answer_prefix + body

    def render_pairs(self, messages: list[Message], system: str | None, tokenizer: Tokenizer,
                     tools: str | list | None = None, *, enable_thinking: bool | None = None) -> list[tuple[str, str]]:
        """Text of each (prompt, response) pair; when `messages` ends with a user-side message the
        last pair's response is empty and its prompt is the generation prompt."""
        system = self.system_prompt(system, tools)
        thinking = self.enable_thinking if enable_thinking is None else enable_thinking
        last_query = max((i for i, m in enumerate(messages) if m["role"] == USER), default=-1)
        generation = self._fill(self.generation_prompt, "", tokenizer)
        nothink = self.thought.nothink_text if self.thought is not None and not thinking else ""
        pairs = []
        for start in range(0, len(messages), 2):
            prompt, content = "", messages[start]["content"]
            if start == 0:
                prompt += self._fill(self.prefix, "", tokenizer)
                system_text = self._fill(self.format_system, system, tokenizer) if system else ""
                if self.system_in_user:
                    content = system_text + content
                else:
                    prompt += system_text
            fmt = self.format_observation if messages[start]["role"] == OBSERVATION and self.format_observation \
                else self.format_user
            prompt += self._fill(fmt, content, tokenizer) + generation
            is_last = start + 2 >= len(messages)
            if is_last:
                prompt += nothink
            response = ""
            if start + 1 < len(messages):
                answer = messages[start + 1]
                text = self._answer(answer, is_last, start + 1 < last_query, thinking)
                fmt = self.format_function if answer["role"] == FUNCTION and self.format_function \
                    else self.format_assistant
                response = self._fill(fmt, text, tokenizer)
            pairs.append((prompt, response))
        return pairs

    def encode_pairs(self, tokenizer: Tokenizer, messages: list[Message], system: str | None = None,
                     tools: str | list | None = None, *, enable_thinking: bool | None = None) -> Pairs:
        """Token ids of each (prompt, response) pair, each piece tokenised on its own."""
        return [(literal_text.encode(tokenizer, p), literal_text.encode(tokenizer, r))
                for p, r in self.render_pairs(messages, system, tokenizer, tools, enable_thinking=enable_thinking)]

    def encode_prompt(self, tokenizer: Tokenizer, messages: list[Message], system: str | None = None,
                      tools: str | list | None = None, *, enable_thinking: bool | None = None) -> list[int]:
        """Token ids that ask the model for the next answer (`messages` ends with a user-side turn)."""
        return _prompt_ids(self.encode_pairs(tokenizer, _for_prompt(messages), system, tools,
                                             enable_thinking=enable_thinking))

    # -- jinja ------------------------------------------------------------------------------------
    def to_jinja(self) -> str:
        """A Jinja chat template that renders exactly what `render_pairs` does.

        Input in the usual Hugging Face shape: a leading `system` message, `tools=[...]`, assistant
        messages with `tool_calls` (and optionally `reasoning_content`), `tool` messages for results.
        """
        def fill(fmt: str, content_expr: str) -> str:
            return jinja_fill(fmt, {"content": content_expr, "bos": "bos_token", "eos": "eos_token"})

        t, tools = self.thought, TOOL_FORMATS[self.tool_format]
        head = (
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            f"{{%- set system = messages[0]['content'] or {_jinja_string(self.default_system)} -%}}"
            "{%- set loop_messages = messages[1:] -%}"
            f"{{%- else -%}}{{%- set system = {_jinja_string(self.default_system)} -%}}"
            "{%- set loop_messages = messages -%}{%- endif -%}"
            "{%- if tools -%}{%- set tool_text -%}" + tools.jinja_tool_text() + "{%- endset -%}"
            + tools.jinja_with_system() + "{%- endif -%}"
            "{%- set system_text -%}{%- if system -%}" + fill(self.format_system, "system") + "{%- endif -%}{%- endset -%}"
        )
        if t is not None:
            default = "true" if self.enable_thinking else "false"
            head += (
                "{%- if enable_thinking is defined and enable_thinking is not none -%}"
                "{%- set thinking = enable_thinking -%}"
                f"{{%- else -%}}{{%- set thinking = {default} -%}}{{%- endif -%}}"
                "{%- set ns = namespace(last_query=-1) -%}"
                "{%- for m in loop_messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_query = loop.index0 -%}"
                "{%- endif -%}{%- endfor -%}"
            )
        nothink = ("{%- if not thinking -%}" + jinja_literal(t.nothink_text) + "{%- endif -%}") if t else ""
        user = ("{%- set content = (system_text + message['content']) if loop.first else message['content'] -%}"
                if self.system_in_user else "{%- set content = message['content'] -%}")
        body = ("{%- if message.tool_calls -%}{%- set body -%}" + tools.jinja_format_calls() + "{%- endset -%}"
                "{%- else -%}{%- set body = message['content'] -%}{%- endif -%}")
        if t is not None:
            block = f"{_jinja_string(t.open)} + reasoning.strip('\\n') + {_jinja_string(t.close)} + body.lstrip('\\n')"
            plain = f"{_jinja_string(t.answer_prefix)} + body"
            body += (
                "{%- set reasoning = '' -%}"
                "{%- if not message.tool_calls -%}"
                "{%- if message.reasoning_content is defined and message.reasoning_content -%}"
                "{%- set reasoning = message.reasoning_content -%}"
                "{%- elif '</think>' in body -%}"
                "{%- set reasoning = body.split('</think>')[0].split('<think>')[-1] -%}"
                "{%- set body = body.split('</think>')[-1].lstrip('\\n') -%}"
                "{%- endif -%}{%- endif -%}"
                "{%- if not thinking -%}{%- if not loop.last -%}" f"{{%- set body = {plain} -%}}" "{%- endif -%}"
                f"{{%- elif loop.index0 < ns.last_query and {'true' if t.strip_history else 'false'} -%}}"
                f"{{%- set body = {plain} -%}}"
                f"{{%- elif (loop.last and {'true' if t.always_block else 'false'}) or reasoning -%}}"
                f"{{%- set body = {block} -%}}"
                f"{{%- else -%}}{{%- set body = {plain} -%}}{{%- endif -%}}"
            )
        generation = fill(self.generation_prompt, "''")
        return (
            head + fill(self.prefix, "''")
            + ("" if self.system_in_user else "{{ system_text }}")
            + "{%- for message in loop_messages -%}"
            "{%- if message['role'] in ('user', 'tool', 'observation') -%}" + user
            + "{%- if message['role'] == 'user' -%}" + fill(self.format_user, "content")
            + "{%- else -%}" + fill(self.format_observation or self.format_user, "content") + "{%- endif -%}"
            "{%- elif message['role'] == 'assistant' -%}" + generation
            + ("{%- if loop.last -%}" + nothink + "{%- endif -%}" if t else "") + body
            + "{%- if message.tool_calls -%}" + fill(self.format_function or self.format_assistant, "body")
            + "{%- else -%}" + fill(self.format_assistant, "body") + "{%- endif -%}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}" + generation + nothink + "{%- endif -%}"
        )


def _jinja_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _for_prompt(messages: list[Message]) -> list[Message]:
    if not messages or len(messages) % 2 == 0:
        from lf_data.errors import DataError

        raise DataError("a prompt must end with a user (or observation) message")
    return messages


def _prompt_ids(pairs: Pairs) -> list[int]:
    return [t for p, r in pairs[:-1] for t in p + r] + pairs[-1][0]


@dataclass(frozen=True)
class AutoTemplate:
    """`template: auto`: the tokenizer's own Jinja chat template, with exact assistant-only labels.

    Each assistant turn is located by rendering the conversation up to it with and without the
    generation prompt; the template must only append text as the conversation grows.
    """

    name: str = "auto"
    stop_words: tuple[str, ...] = ()

    def render_pairs(self, messages: list[Message], system: str | None, tokenizer: Any,
                     tools: str | list | None = None, *, enable_thinking: bool | None = None) -> list[tuple[str, str]]:
        from lf_data.errors import DataError

        if not getattr(tokenizer, "chat_template", None):
            raise DataError("template auto: this tokenizer has no chat template of its own. "
                            "Set `template:` to a named template (for example chatml or llama3).")
        head = 1 if system else 0
        convo = to_openai(messages, system)
        options: dict[str, Any] = {"tokenize": False}
        if tools:
            options["tools"] = json.loads(tools) if isinstance(tools, str) else tools
        if enable_thinking is not None:
            options["enable_thinking"] = enable_thinking
        pairs, done = [], ""
        for end in range(head, len(convo), 2):
            prompt_text = tokenizer.apply_chat_template(convo[:end + 1], add_generation_prompt=True, **options)
            full = (tokenizer.apply_chat_template(convo[:end + 2], **options)
                    if end + 1 < len(convo) else prompt_text)
            if not prompt_text.startswith(done) or not full.startswith(prompt_text):
                raise DataError("template auto: the tokenizer's chat template rewrites earlier turns as the "
                                "conversation grows, so assistant tokens cannot be located exactly. "
                                "Set `template:` to the named template of this model family.")
            pairs.append((prompt_text[len(done):], full[len(prompt_text):] if end + 1 < len(convo) else ""))
            done = full
        return pairs

    def encode_pairs(self, tokenizer: Any, messages: list[Message], system: str | None = None,
                     tools: str | list | None = None, *, enable_thinking: bool | None = None) -> Pairs:
        return [(literal_text.encode(tokenizer, p), literal_text.encode(tokenizer, r))
                for p, r in self.render_pairs(messages, system, tokenizer, tools, enable_thinking=enable_thinking)]

    def encode_prompt(self, tokenizer: Any, messages: list[Message], system: str | None = None,
                      tools: str | list | None = None, *, enable_thinking: bool | None = None) -> list[int]:
        return _prompt_ids(self.encode_pairs(tokenizer, _for_prompt(messages), system, tools,
                                             enable_thinking=enable_thinking))
