"""A chat template: how one conversation becomes (prompt, response) text pairs and token ids.

A template is a handful of format strings with a ``{content}`` slot (and ``{bos}`` / ``{eos}`` for
the tokenizer's special tokens). The same strings give the training tokenisation and a Jinja chat
template that is saved with the tokenizer, so plain ``transformers`` builds the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Tokenizer(Protocol):
    bos_token: str | None
    eos_token: str | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Template:
    name: str
    format_user: str
    format_assistant: str
    format_system: str = "{content}"
    format_observation: str = ""
    generation_prompt: str = ""
    """Text that opens an assistant turn; part of the prompt, never trained on."""
    prefix: str = ""
    """Text before the whole conversation (typically `{bos}`)."""
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    """Strings that end generation besides the tokenizer's eos."""

    # -- text -------------------------------------------------------------------------------------
    def _fill(self, fmt: str, content: str, tokenizer: Tokenizer) -> str:
        return (fmt.replace("{bos}", tokenizer.bos_token or "").replace("{eos}", tokenizer.eos_token or "")
                .replace("{content}", content))

    def render_pairs(self, messages: list[dict[str, str]], system: str | None,
                     tokenizer: Tokenizer) -> list[tuple[str, str]]:
        """Text of each (prompt, response) pair; the last pair's response may be empty (inference)."""
        system = system or self.default_system
        pairs = []
        for start in range(0, len(messages), 2):
            prompt = ""
            if start == 0:
                prompt += self._fill(self.prefix, "", tokenizer)
                if system:
                    prompt += self._fill(self.format_system, system, tokenizer)
            user = messages[start]
            fmt = self.format_observation if user["role"] == "observation" and self.format_observation \
                else self.format_user
            prompt += self._fill(fmt, user["content"], tokenizer) + self._fill(self.generation_prompt, "", tokenizer)
            response = ""
            if start + 1 < len(messages):
                response = self._fill(self.format_assistant, messages[start + 1]["content"], tokenizer)
            pairs.append((prompt, response))
        return pairs

    def encode_pairs(self, tokenizer: Tokenizer, messages: list[dict[str, str]],
                     system: str | None = None) -> list[tuple[list[int], list[int]]]:
        """Token ids of each (prompt, response) pair, each piece tokenised on its own."""
        return [(tokenizer.encode(p, add_special_tokens=False), tokenizer.encode(r, add_special_tokens=False))
                for p, r in self.render_pairs(messages, system, tokenizer)]

    # -- jinja ------------------------------------------------------------------------------------
    def to_jinja(self) -> str:
        """A Jinja chat template that renders exactly what `render_pairs` does."""

        def piece(fmt: str, content_expr: str) -> str:
            out = []
            for i, part in enumerate(fmt.split("{content}")):
                if i:
                    out.append("{{ " + content_expr + " }}")
                for j, literal in enumerate(part.split("{bos}")):
                    if j:
                        out.append("{{ bos_token }}")
                    for k, text in enumerate(literal.split("{eos}")):
                        if k:
                            out.append("{{ eos_token }}")
                        if text:
                            out.append("{{ " + _jinja_string(text) + " }}")
            return "".join(out)

        observation = self.format_observation or self.format_user
        return (
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}"
            f"{{%- set system = {_jinja_string(self.default_system)} -%}}{{%- set loop_messages = messages -%}}"
            "{%- endif -%}"
            + piece(self.prefix, "''")
            + "{%- if system -%}" + piece(self.format_system, "system") + "{%- endif -%}"
            "{%- for message in loop_messages -%}"
            "{%- if message['role'] == 'user' -%}" + piece(self.format_user, "message['content']")
            + "{%- elif message['role'] in ('tool', 'observation') -%}" + piece(observation, "message['content']")
            + "{%- elif message['role'] == 'assistant' -%}" + piece(self.generation_prompt, "''")
            + piece(self.format_assistant, "message['content']")
            + "{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}" + piece(self.generation_prompt, "''") + "{%- endif -%}"
        )


def _jinja_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


@dataclass(frozen=True)
class AutoTemplate:
    """`template: auto`: the tokenizer's own Jinja chat template, with exact assistant-only labels.

    Each assistant turn is located by rendering the conversation up to it with and without the
    generation prompt; the template must only append text as the conversation grows.
    """

    name: str = "auto"
    stop_words: tuple[str, ...] = ()

    def render_pairs(self, messages: list[dict[str, str]], system: str | None,
                     tokenizer: Any) -> list[tuple[str, str]]:
        if not getattr(tokenizer, "chat_template", None):
            from lf_data.errors import DataError

            raise DataError("template auto: this tokenizer has no chat template of its own. "
                            "Set `template:` to a named template (for example chatml or llama3).")
        head = [{"role": "system", "content": system}] if system else []
        convo = head + [{"role": "tool" if m["role"] == "observation" else m["role"], "content": m["content"]}
                        for m in messages]
        pairs, done = [], ""
        for end in range(len(head), len(convo), 2):
            prompt_text = tokenizer.apply_chat_template(convo[:end + 1], tokenize=False, add_generation_prompt=True)
            full = (tokenizer.apply_chat_template(convo[:end + 2], tokenize=False)
                    if end + 1 < len(convo) else prompt_text)
            if not prompt_text.startswith(done) or not full.startswith(prompt_text):
                from lf_data.errors import DataError

                raise DataError("template auto: the tokenizer's chat template rewrites earlier turns as the "
                                "conversation grows, so assistant tokens cannot be located exactly. "
                                "Set `template:` to the named template of this model family.")
            pairs.append((prompt_text[len(done):], full[len(prompt_text):]))
            done = full
        return pairs

    def encode_pairs(self, tokenizer: Any, messages: list[dict[str, str]],
                     system: str | None = None) -> list[tuple[list[int], list[int]]]:
        return [(tokenizer.encode(p, add_special_tokens=False), tokenizer.encode(r, add_special_tokens=False))
                for p, r in self.render_pairs(messages, system, tokenizer)]
