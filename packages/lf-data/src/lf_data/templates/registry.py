"""Every named chat template, in one place. Names follow LlamaFactory's where one exists."""

from __future__ import annotations

import difflib

from lf_data.errors import ConfigError
from lf_data.templates.template import AutoTemplate, Template

TEMPLATES: dict[str, Template] = {}


def register(template: Template) -> Template:
    if template.name in TEMPLATES:
        raise ValueError(f"template {template.name!r} is registered twice")
    TEMPLATES[template.name] = template
    return template


def get_template(name: str | None) -> Template | AutoTemplate:
    if name in (None, "auto"):
        return AutoTemplate()
    if name not in TEMPLATES:
        close = difflib.get_close_matches(name, list(TEMPLATES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown template {name!r}.{hint} Use `auto` (the tokenizer's own chat template) "
                          f"or one of: {', '.join(sorted(TEMPLATES))}.")
    return TEMPLATES[name]


def _chatml(name: str, default_system: str = "") -> Template:
    return Template(
        name=name,
        format_system="<|im_start|>system\n{content}<|im_end|>\n",
        format_user="<|im_start|>user\n{content}<|im_end|>\n",
        format_observation="<|im_start|>tool\n{content}<|im_end|>\n",
        generation_prompt="<|im_start|>assistant\n",
        format_assistant="{content}<|im_end|>\n",
        default_system=default_system,
        stop_words=("<|im_end|>",),
    )


register(Template(name="empty", format_user="{content}", format_assistant="{content}"))
register(Template(
    name="default",
    format_system="System: {content}\n",
    format_user="Human: {content}\n",
    generation_prompt="Assistant: ",
    format_assistant="{content}{eos}\n",
))
register(Template(
    name="alpaca",
    format_system="{content}\n\n",
    format_user="### Instruction:\n{content}\n\n",
    generation_prompt="### Response:\n",
    format_assistant="{content}{eos}\n\n",
    default_system="Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.",
))
register(Template(
    name="vicuna",
    format_system="{content} ",
    format_user="USER: {content} ",
    generation_prompt="ASSISTANT:",
    format_assistant="{content}{eos}",
    default_system="A chat between a curious user and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the user's questions.",
))
register(_chatml("chatml"))
register(_chatml("qwen", default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant."))
register(_chatml("smollm2", default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face"))
register(Template(
    name="llama3",
    prefix="{bos}",
    format_system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
    format_user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
    format_observation="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>",
    generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
    format_assistant="{content}<|eot_id|>",
    stop_words=("<|eot_id|>", "<|eom_id|>"),
))
