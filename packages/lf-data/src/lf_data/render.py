"""Render one conversation with a template: token ids, which of them are trained, and the text.

The tool users reach for when they doubt a template (`lf data render`), and a small public function
other projects can call to check a template without writing a pipeline.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any

from lf_data import literal_text
from lf_data.errors import DataError
from lf_data.messages import check_turns, from_openai
from lf_data.processors import IGNORE_INDEX
from lf_data.processors.supervised import encode_supervised
from lf_data.templates import get_template

TOKENIZER_LOADERS = "lf.tokenizer_loaders"


def load_tokenizer(reference: str, trust_remote_code: bool = False) -> tuple[Any, str | None]:
    """(tokenizer, the model's default template name) for a model reference.

    Installed packages may resolve references that plain transformers cannot (lf-models resolves
    bundled model names and .gguf files) through the `lf.tokenizer_loaders` entry-point group.
    """
    for ep in entry_points(group=TOKENIZER_LOADERS):
        return ep.load()(reference, trust_remote_code)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(reference, trust_remote_code=trust_remote_code), None
    except (OSError, ValueError) as err:
        raise DataError(f"could not load a tokenizer from {reference!r}: {err}") from None


def render_conversation(template: str | Any, tokenizer: Any, messages: list[dict[str, Any]], *,
                        tools: str | list | None = None, system: str | None = None,
                        add_generation_prompt: bool = False, special_tokens_in_content: bool = False
                        ) -> dict[str, Any]:
    """Token ids, labels and text of a conversation as LF trains on it (or prompts with it)."""
    template = get_template(template) if isinstance(template, str) or template is None else template
    standard, own_system = from_openai(messages)
    system = system if system is not None else own_system
    if isinstance(tools, list):
        tools = json.dumps(tools, ensure_ascii=False)
    if not standard:
        raise DataError("the conversation has no user or assistant message")
    check_turns(standard)
    if add_generation_prompt != (len(standard) % 2 == 1):
        raise DataError("with --add-generation-prompt the conversation must end with a user message; "
                        "without it, with an assistant message")
    if not special_tokens_in_content:  # as training does: `<|im_start|>` typed in a message stays text
        standard, system = literal_text.protect_messages(standard, system, tokenizer)
    if add_generation_prompt:
        input_ids = template.encode_prompt(tokenizer, standard, system, tools or None)
        labels = [IGNORE_INDEX] * len(input_ids)
    else:
        pairs = template.encode_pairs(tokenizer, standard, system, tools or None)
        input_ids, labels = encode_supervised(pairs, cutoff_len=1 << 30)
    trained = [label != IGNORE_INDEX for label in labels]
    return {
        "template": template.name,
        "text": tokenizer.decode(input_ids),
        "input_ids": input_ids,
        "labels": labels,
        "trained": trained,
        "trained_text": tokenizer.decode([t for t, keep in zip(input_ids, trained, strict=True) if keep]),
    }
